"""Run folders: what one training run writes under `train.runs_dir`, and how it is read back.

`runs/<name>/` holds
- `metrics.json`: validation and test metrics under the configured masking setting (stated in the file),
  test under the other setting too, epochs, seconds to the best epoch, the split summary and the history;
- `model.pt` (a `state_dict`) + `model.json` (model name, its config, sizes, feature columns, run id), written
  by `Recommender.save`; `load_run` reads them back with `torch.load(weights_only=True)`;
- `items.json` (item index -> item id), `config.yaml` (the resolved config), `curve.png` (loss and validation
  NDCG@10 per epoch) and `test_per_user.csv` (each test user's target and rank);
- `users.json` (user index -> user id) and `histories.parquet` (per user index, every item index of the user
  in the run's data, in time order): what `seerec recommend` serves known users from (`load_serving`);
- `trained_items.json`: the ids of the items in at least one training history of the split, so that a view
  of the run can mark what the model never saw in training (cold-start items, items without interactions).

`metrics.json` carries `warnings`, e.g. when the best epoch was the last one (validation still improving).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from pipeline.config import SeerecConfig, TrainConfig, validate_config
from recommenders.base import Recommender
from recommenders.data import Interactions, RecommenderError, Split
from recommenders.evaluate import EvalResult

log = logging.getLogger("seerec.train")


@dataclass
class RunResult:
    run_dir: Path
    run_id: str
    metrics: dict
    model: Recommender = field(repr=False)


def run_folder(tcfg: TrainConfig) -> tuple[Path, str]:
    """(the run's folder, created; its run id). The default name is <model>-<features>-<time>."""
    features = f"-{'+'.join(tcfg.features)}" if tcfg.features else ""
    name = tcfg.name or f"{tcfg.model}{features}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    run_dir = Path(tcfg.runs_dir) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir, f"seerec-train:{name}"


def write_run(run_dir: Path, cfg: SeerecConfig, model: Recommender, metrics: dict, interactions: Interactions,
              split: Split, test: EvalResult) -> None:
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    metrics["warnings"] = training_warnings(metrics)
    for warning in metrics["warnings"]:
        log.warning("%s: %s", metrics["run_id"], warning)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    model.save(run_dir, features=cfg.train.features, run_id=metrics["run_id"])
    (run_dir / "items.json").write_text(json.dumps([str(i) for i in interactions.item_ids]))
    (run_dir / "users.json").write_text(json.dumps([str(u) for u in interactions.user_ids]))
    histories = pa.array([np.asarray(s, np.int64) for s in interactions.sequences], pa.list_(pa.int64()))
    pq.write_table(pa.table({"history": histories}), run_dir / "histories.parquet")
    trained = np.unique(np.concatenate([np.zeros(0, np.int64), *split.train])).astype(np.int64)
    (run_dir / "trained_items.json").write_text(json.dumps([str(i) for i in interactions.item_ids[trained]]))
    per_user = test.per_user()
    frame = pd.DataFrame({"user_id": interactions.user_ids[per_user["user"]],
                          "target_item_id": interactions.item_ids[per_user["target"]], "rank": per_user["rank"]})
    frame.to_csv(run_dir / "test_per_user.csv", index=False)
    plot_curve(metrics["history"], run_dir / "curve.png", f"{model.name} ({metrics['run_id']})")


def training_warnings(metrics: dict) -> list[str]:
    """What a user should know about how the run trained: a best epoch that is the last epoch run means
    validation was still improving when training stopped."""
    if metrics["epochs_run"] > 0 and metrics["best_epoch"] == metrics["epochs_run"]:
        return [f"training stopped at epoch {metrics['epochs_run']} while validation NDCG@10 was still improving "
                "(the best epoch is the last one); train with more epochs (train.epochs)"]
    return []


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[Recommender, dict]:
    """(the trained model in eval mode, its model.json) of a run folder."""
    return Recommender.load(run_dir, device)


@dataclass
class ServingData:
    """What serving a run needs besides the model: the id maps and every known user's history."""

    item_ids: list[str]  # item index -> id
    user_ids: list[str]  # user index -> id
    histories: list[np.ndarray]  # per user index: item indexes in time order
    config: SeerecConfig  # the run's resolved config (its store is where the items live)
    trained_items: frozenset[str] | None  # ids in a training history; None: the folder predates trained_items.json


def load_serving(run_dir: str | Path) -> ServingData:
    """The id maps, histories and config of a run folder; one sentence when the folder cannot be served."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RecommenderError(f"run folder {run_dir} does not exist; give a folder written by `seerec train`")
    needed = ("model.json", "model.pt", "items.json", "config.yaml")
    if missing := [name for name in needed if not (run_dir / name).is_file()]:
        raise RecommenderError(f"{run_dir} is not a run folder of `seerec train` (it has no {missing[0]})")
    if not (run_dir / "users.json").is_file() or not (run_dir / "histories.parquet").is_file():
        raise RecommenderError(f"{run_dir} was written by an older seerec without users.json and "
                               "histories.parquet; train it again to recommend from it")
    config = validate_config(yaml.safe_load((run_dir / "config.yaml").read_text()))
    column = pq.read_table(run_dir / "histories.parquet")["history"]
    histories = [np.asarray(h, dtype=np.int64) for h in column.to_numpy(zero_copy_only=False)]
    trained = run_dir / "trained_items.json"
    return ServingData(json.loads((run_dir / "items.json").read_text()),
                       json.loads((run_dir / "users.json").read_text()), histories, config,
                       frozenset(json.loads(trained.read_text())) if trained.is_file() else None)


def plot_curve(history: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, left = plt.subplots(figsize=(6, 3.5))
    losses = [(h["epoch"], h["loss"]) for h in history if h["loss"] is not None]
    if losses:
        left.plot(*zip(*losses, strict=True), color="tab:blue", marker=".", label="training loss")
    left.set_xlabel("epoch")
    left.set_ylabel("training loss", color="tab:blue")
    right = left.twinx()
    right.plot(epochs, [h["valid_ndcg@10"] for h in history], color="tab:orange", marker=".", label="valid NDCG@10")
    right.set_ylabel("validation NDCG@10", color="tab:orange")
    left.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
