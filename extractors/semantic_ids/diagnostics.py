"""Diagnostics for one fit: per-level codebook use, collisions, reconstruction error, time; JSON + PNG."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from extractors.semantic_ids.base import Tokenizer
from extractors.semantic_ids.collisions import collision_stats


def level_stats(codes: np.ndarray, sizes: list[int]) -> list[dict]:
    out = []
    for level, k in enumerate(sizes):
        counts = np.bincount(codes[:, level].astype(np.int64), minlength=k)
        p = counts[counts > 0] / counts.sum()
        out.append({
            "level": level, "codes": int(k), "used": int((counts > 0).sum()),
            "utilisation": float((counts > 0).sum() / k),
            "perplexity": float(np.exp(-(p * np.log(p)).sum())),
            "max_items_per_code": int(counts.max()),
            "items_per_code": counts.tolist(),
        })
    return out


def prefix_groups(codes: np.ndarray) -> list[dict]:
    """Largest group of items sharing each prefix length 1..L."""
    return [{"prefix_levels": n, "largest_group": collision_stats(codes[:, :n])["largest_group"],
             "distinct": collision_stats(codes[:, :n])["unique_ids"]} for n in range(1, codes.shape[1] + 1)]


def reconstruction(tokenizer: Tokenizer, X: np.ndarray, codes: np.ndarray) -> dict:
    Z = tokenizer.preprocessed(X)
    err = ((Z - tokenizer.decode(codes)) ** 2).sum(1)
    energy = (Z ** 2).sum(1)
    return {"mse": float(err.mean()), "relative": float(err.sum() / max(energy.sum(), 1e-12))}


def diagnose(tokenizer: Tokenizer, X: np.ndarray, codes: np.ndarray, ids: np.ndarray, method: str,
             fit_seconds: float | None = None) -> dict:
    final = collision_stats(ids)
    return {
        "tokenizer_id": tokenizer.tokenizer_id,
        "kind": tokenizer.kind,
        "levels": tokenizer.levels,
        "codebook_size": tokenizer.codebook_size,
        "preprocess": tokenizer.pre.mode,
        "columns": tokenizer.columns,
        "items": int(len(codes)),
        "fit_seconds": float(tokenizer.fit_seconds if fit_seconds is None else fit_seconds),
        "per_level": level_stats(codes, tokenizer.level_sizes),
        "before_dedup": collision_stats(codes),
        "prefix_groups": prefix_groups(codes),
        "collision_method": method,
        "id_length": int(ids.shape[1]),
        "duplicate_final_ids": int(final["items"] - final["unique_ids"]),
        "reconstruction": reconstruction(tokenizer, X, codes),
    }


def summary_line(diag: dict) -> str:
    util = "/".join(f"{lv['utilisation']:.0%}" for lv in diag["per_level"])
    before = diag["before_dedup"]
    return (f"{diag['kind']} {diag['levels']}x{diag['codebook_size']} on {diag['items']} items: utilisation {util}, "
            f"collision rate {before['collision_rate']:.2%} (largest group {before['largest_group']}), "
            f"relative reconstruction error {diag['reconstruction']['relative']:.3f}, "
            f"{diag['duplicate_final_ids']} duplicate IDs after {diag['collision_method']}, "
            f"fit {diag['fit_seconds']:.1f}s")


def write_diagnostics(diag: dict, out_dir: str | Path, history: list[dict] | None = None) -> tuple[Path, Path]:
    """diagnostics.json and diagnostics.png (items per code, sorted, per level) in out_dir."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out_dir / "diagnostics.json", out_dir / "diagnostics.png"
    json_path.write_text(json.dumps({**diag, "history": history or []}, indent=2) + "\n")
    levels = diag["per_level"]
    fig, axes = plt.subplots(1, len(levels) + 1, figsize=(4 * (len(levels) + 1), 3.2))
    for ax, lv in zip(axes, levels, strict=False):
        counts = np.sort(np.asarray(lv["items_per_code"]))[::-1]
        ax.bar(np.arange(len(counts)), counts, width=1.0)
        ax.set_title(f"level {lv['level']}: {lv['used']}/{lv['codes']} used, ppl {lv['perplexity']:.0f}", fontsize=9)
        ax.set_xlabel("code (sorted by items)")
        ax.set_ylabel("items")
    groups = diag["prefix_groups"]
    axes[-1].bar([g["prefix_levels"] for g in groups], [g["largest_group"] for g in groups])
    axes[-1].set_title(f"largest prefix group; collisions {diag['before_dedup']['collision_rate']:.1%}", fontsize=9)
    axes[-1].set_xlabel("prefix length")
    fig.suptitle(summary_line(diag), fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)
    plt.close(fig)
    return json_path, png_path
