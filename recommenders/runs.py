"""Run folders: what one training run writes under `train.runs_dir`, and how it is read back.

`runs/<name>/` holds
- `metrics.json`: validation and test metrics under the configured masking setting (stated in the file),
  test under the other setting too, epochs, seconds to the best epoch, the split summary and the history;
- `model.pt` (a `state_dict`) + `model.json` (model name, its config, sizes, feature columns, run id), written
  by `Recommender.save`; `load_run` reads them back with `torch.load(weights_only=True)`;
- `items.json` (item index -> item id), `config.yaml` (the resolved config), `curve.png` (loss and validation
  NDCG@10 per epoch) and `test_per_user.csv` (each test user's target and rank).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import yaml

from pipeline.config import SeerecConfig, TrainConfig
from recommenders.base import Recommender
from recommenders.data import Interactions
from recommenders.evaluate import EvalResult


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
              test: EvalResult) -> None:
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    model.save(run_dir, features=cfg.train.features, run_id=metrics["run_id"])
    (run_dir / "items.json").write_text(json.dumps([str(i) for i in interactions.item_ids]))
    per_user = test.per_user()
    frame = pd.DataFrame({"user_id": interactions.user_ids[per_user["user"]],
                          "target_item_id": interactions.item_ids[per_user["target"]], "rank": per_user["rank"]})
    frame.to_csv(run_dir / "test_per_user.csv", index=False)
    plot_curve(metrics["history"], run_dir / "curve.png", f"{model.name} ({metrics['run_id']})")


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[Recommender, dict]:
    """(the trained model in eval mode, its model.json) of a run folder."""
    return Recommender.load(run_dir, device)


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
