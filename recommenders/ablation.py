"""The feature ablation grid (`seerec ablate`): which cells it has, each cell's config and its resume hash, and
the table in the shape of a paper's ablation: rows = feature sets, columns = models, relative gain over a
baseline row, a significance mark from a paired t-test over test users, and breakdowns by item group.

Every cell is a normal `run_train` run folder (`<runs_dir>/<name>/<split>/<feature set>/<model>`), so a cell
and `seerec train` with the same settings never disagree. A cell is finished when its folder holds
`cell.json` with the hash of its resolved config (written after the run folder is complete); anything else,
also a folder a killed run left half-written, is trained again.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import ID_ROW, SeerecConfig, validate_config  # ID_ROW: the feature-set name of the ID-only row
from pipeline.logs import setup_logging
from recommenders.data import RecommenderError
from recommenders.evaluate import EvalResult, metrics_from_ranks
from recommenders.experiment import run_train
from recommenders.registry import model_class

CELL_FILE = "cell.json"
K = 10


@dataclass(frozen=True)
class Cell:
    split: str
    feature_set: str  # a store vector column, columns joined by '+', or ID_ROW
    model: str

    @property
    def path(self) -> str:
        return f"{self.split}/{self.feature_set}/{self.model}"


def feature_columns(feature_set: str) -> list[str]:
    return [c.strip() for c in feature_set.split("+") if c.strip()]


def sid_column(feature_set: str) -> str:
    """The semantic-ID column the ablation quantizes from a feature set: sid_<columns joined by _>."""
    return "sid_" + "_".join(feature_columns(feature_set))


def check_models(models: list[str], reference_models: list[str]) -> None:
    """Unknown names stop with the registry's sentence; content columns take content or generative models,
    the ID-only row takes ID-only models."""
    for name in models:
        if model_class(name).item_inputs == "ids":
            raise RecommenderError(f"ablate.models lists {name!r}, which reads no item features; list it in "
                                   "ablate.reference_models (the ID-only row)")
    for name in reference_models:
        if model_class(name).item_inputs != "ids":
            raise RecommenderError(f"ablate.reference_models lists {name!r}, which reads item inputs; list it in "
                                   "ablate.models")


def grid(cfg: SeerecConfig, feature_sets: list[str]) -> list[Cell]:
    a = cfg.ablate
    cells = []
    for split in a.splits:
        cells += [Cell(split, ID_ROW, model) for model in a.reference_models]
        cells += [Cell(split, fs, model) for fs in feature_sets for model in a.models]
    return cells


def cell_config(cfg: SeerecConfig, cell: Cell) -> SeerecConfig:
    """The resolved config of one cell: the experiment's config with this split, model and feature set; tiger
    reads the semantic IDs quantized from the feature set with the config's quantize settings."""
    run = cfg.model_copy(deep=True)
    run.train.model = cell.model
    run.train.name = f"{cfg.ablate.name}/{cell.path}"
    run.train.data.split = cell.split
    run.train.cpu_threads = run.train.cpu_threads or max(1, int(cfg.ablate.cpus))
    run.train.features = []
    if cell.feature_set != ID_ROW:
        if model_class(cell.model).item_inputs == "semantic_ids":
            run.quantize.columns = feature_columns(cell.feature_set)
            run.quantize.column = sid_column(cell.feature_set)
            run.quantize.out_dir = str(Path(cfg.train.runs_dir) / cfg.ablate.name / "tokenizers" / run.quantize.column)
            run.train.section(cell.model).semantic_id_column = run.quantize.column
        else:
            run.train.features = feature_columns(cell.feature_set)
    return run


def config_hash(run: SeerecConfig) -> str:
    """Hash of what decides a cell's result: the train section, the store and (for semantic IDs) quantize."""
    relevant = {"train": run.train.model_dump(mode="json"), "store": run.store.model_dump(mode="json")}
    if model_class(run.train.model).item_inputs == "semantic_ids":
        relevant["quantize"] = run.quantize.model_dump(mode="json")
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def run_dir(run: SeerecConfig) -> Path:
    return Path(run.train.runs_dir) / run.train.name


def finished(run: SeerecConfig) -> bool:
    """True when the cell's folder is complete for exactly this config (cell.json is written last)."""
    marker = run_dir(run) / CELL_FILE
    if not marker.is_file() or not (run_dir(run) / "metrics.json").is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("config_hash") == config_hash(run)
    except json.JSONDecodeError:
        return False


def mark_finished(run: SeerecConfig, cell: Cell) -> None:
    (run_dir(run) / CELL_FILE).write_text(json.dumps({"config_hash": config_hash(run), "split": cell.split,
                                                      "feature_set": cell.feature_set, "model": cell.model}))


def train_cell(config: dict, cell: Cell) -> float:
    """A Ray task: `finish_cell` in a worker, with seerec's logging; returns its seconds. It lives here, not in
    the job module, so a worker imports only the recommenders (the job module's embedding stages would add about
    2 s of imports to each new worker on 2 cores)."""
    setup_logging()
    started = time.perf_counter()
    finish_cell(validate_config(config), cell)
    return time.perf_counter() - started


def finish_cell(run: SeerecConfig, cell: Cell) -> None:
    """Train one cell into its run folder, then mark it finished (last, so a kill leaves it pending)."""
    run_train(run)
    mark_finished(run, cell)


# ---- statistics -------------------------------------------------------------------------------------------
def per_user_ndcg(ranks: np.ndarray, k: int = K) -> np.ndarray:
    empty = np.zeros(len(ranks), np.int64)
    return EvalResult({}, np.asarray(ranks), empty, empty, True).per_user((k,))[f"ndcg@{k}"]


def paired_t_test(a: np.ndarray, b: np.ndarray) -> dict:
    """Two-sided paired t-test of per-user values a vs b (the same users in the same order)."""
    from scipy import stats

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise RecommenderError(f"a paired test needs the same users on both sides, got {len(a)} and {len(b)}")
    diff = a - b
    if len(diff) < 2 or np.allclose(diff, diff[0]):  # no spread: t is undefined
        p = 1.0 if len(diff) == 0 or np.allclose(diff, 0) else 0.0
        return {"mean_diff": float(diff.mean()) if len(diff) else 0.0, "t": None, "p": p, "users": len(diff)}
    result = stats.ttest_rel(a, b)
    return {"mean_diff": float(diff.mean()), "t": float(result.statistic), "p": float(result.pvalue),
            "users": len(diff)}


def relative_gain(value: float, baseline: float) -> float | None:
    return None if baseline == 0 else (value - baseline) / baseline


# ---- the table --------------------------------------------------------------------------------------------
def cell_row(cell: Cell, metrics: dict, mask_history: bool) -> dict:
    shown, other = ("test", "test_unmasked") if mask_history else ("test", "test_masked")
    masked, unmasked = (metrics[shown], metrics[other]) if mask_history else (metrics[other], metrics[shown])
    return {"split": cell.split, "feature_set": cell.feature_set, "model": cell.model,
            "masked_recall@10": masked["recall@10"], "masked_ndcg@10": masked["ndcg@10"],
            "unmasked_recall@10": unmasked["recall@10"], "unmasked_ndcg@10": unmasked["ndcg@10"],
            "valid_ndcg@10": metrics["valid"]["ndcg@10"],
            "items_without_features": metrics.get("features_report", {}).get("items_without_features", 0),
            "seconds": metrics["train_seconds"], "run": cell.path}


def add_gains(table: pd.DataFrame, per_user: dict[str, pd.DataFrame], baseline: str, masking: str,
              alpha: float, baseline_model: str | None = None) -> pd.DataFrame:
    """Gain of each cell's HR@10 and NDCG@10 (under `masking`) over the baseline row's cell of the same split and
    of the same model (of `baseline_model` when the baseline is the ID-only row, whose models are others), and
    the paired t-test on per-user NDCG@10 against it."""
    table = table.copy()
    for column in ("gain_recall@10", "gain_ndcg@10", "p_value"):
        table[column] = np.nan
    table["significant"] = False
    for i, row in table.iterrows():
        model = baseline_model if baseline == ID_ROW else row.model
        base = table[(table.split == row.split) & (table.model == model) & (table.feature_set == baseline)]
        if row.feature_set in (baseline, ID_ROW) or base.empty:
            continue
        base = base.iloc[0]
        for metric in ("recall@10", "ndcg@10"):
            table.at[i, f"gain_{metric}"] = relative_gain(row[f"{masking}_{metric}"], base[f"{masking}_{metric}"])
        mine, theirs = per_user[row.run], per_user[base.run]
        joined = mine.merge(theirs, on="user_id", suffixes=("", "_base"))
        test = paired_t_test(per_user_ndcg(joined["rank"].to_numpy()), per_user_ndcg(joined["rank_base"].to_numpy()))
        table.at[i, "p_value"] = test["p"]
        table.at[i, "significant"] = bool(test["p"] < alpha)
    return table


def markdown(table: pd.DataFrame, split: str, feature_sets: list[str], models: list[str], masking: str,
             gains: bool = True) -> str:
    """One split's table: rows = feature sets (ID only first), columns = models, cells HR@10 / NDCG@10 under
    `masking` and, with `gains`, the NDCG@10 gain over the baseline row (* = significant)."""
    part = table[table.split == split]
    columns = [m for m in models if m in set(part.model)]
    lines = ["| features | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for fs in [ID_ROW, *feature_sets]:
        rows = part[part.feature_set == fs]
        if rows.empty:
            continue
        cells = []
        for model in columns:
            hit = rows[rows.model == model]
            if hit.empty:
                cells.append("-")
                continue
            r = hit.iloc[0]
            text = f"{r[f'{masking}_recall@10']:.4f} / {r[f'{masking}_ndcg@10']:.4f}"
            if gains and not np.isnan(r["gain_ndcg@10"]):
                text += f" ({r['gain_ndcg@10']:+.1%}{'*' if r['significant'] else ''})"
            cells.append(text)
        lines.append(f"| {'ID only' if fs == ID_ROW else fs} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---- breakdowns by item group --------------------------------------------------------------------------
def popularity_groups(train_counts: np.ndarray, rare_below: int) -> np.ndarray:
    """Each item's group by its training interactions: cold (none), rare (< rare_below), frequent."""
    return np.where(train_counts == 0, "cold (0 training interactions)",
                    np.where(train_counts < rare_below, f"rare (1-{rare_below - 1})", f"frequent (>={rare_below})"))


def duration_groups(durations: np.ndarray) -> np.ndarray | None:
    """Thirds of the known durations (short / medium / long, with their bounds in seconds); None without any."""
    known = durations[np.isfinite(durations)]
    if len(known) == 0:
        return None
    low, high = np.quantile(known, [1 / 3, 2 / 3])
    return np.where(~np.isfinite(durations), "unknown duration",
                    np.where(durations <= low, f"short (<={low:.1f}s)",
                             np.where(durations <= high, f"medium (<={high:.1f}s)", f"long (>{high:.1f}s)")))


def breakdown(per_user: pd.DataFrame, item_group: dict[str, str], k: int = K) -> list[dict]:
    """NDCG@k and Recall@k of one cell per group of the test target item."""
    groups = per_user["target_item_id"].astype(str).map(item_group).fillna("unknown")
    out = []
    for group, ranks in per_user.groupby(groups)["rank"]:
        m = metrics_from_ranks(ranks.to_numpy(), (k,))
        out.append({"group": group, "users": len(ranks), f"recall@{k}": m[f"recall@{k}"], f"ndcg@{k}": m[f"ndcg@{k}"]})
    return out


def bar_chart(table: pd.DataFrame, split: str, ax, masking: str) -> None:
    """Grouped bars on a matplotlib axis: one group per model, one bar per feature set (test NDCG@10)."""
    part = table[table.split == split]
    models = list(dict.fromkeys(part.model))
    sets = list(dict.fromkeys(part.feature_set))
    width = 0.8 / max(1, len(sets))
    for j, fs in enumerate(sets):
        values = [part[(part.model == m) & (part.feature_set == fs)][f"{masking}_ndcg@10"].sum() for m in models]
        ax.bar(np.arange(len(models)) + (j - (len(sets) - 1) / 2) * width, values, width,
               label="ID only" if fs == ID_ROW else fs)
    ax.set_xticks(np.arange(len(models)), models, fontsize=8)
    ax.set_ylabel("test NDCG@10")
    ax.set_title(f"{split}, full ranking, history {masking}", fontsize=9)
    ax.legend(fontsize=7)
