"""Data-parallel training through Ray Train (`train.workers > 1`): the same loop, on several workers.

Each worker gets a copy of the (untrained) model and the split, takes rank 0's initial weights, trains on
every world-th user (`recommenders.train._fit`), and averages gradients with the others after each step
(NCCL on GPUs, Gloo on CPUs, set up by Ray Train's `TorchTrainer`). Rank 0 reports the best epoch's
`state_dict` as a Ray Train checkpoint, which the driver loads back with `weights_only=True`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from pipeline.config import SeerecConfig
from recommenders.base import Recommender
from recommenders.data import Split


def _worker(config: dict) -> None:
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    from recommenders.train import _fit

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    model: Recommender = config["model"].to(device)
    for param in model.parameters():
        dist.broadcast(param.data, src=0)
    history = _fit(model, config["split"], config["tcfg"], rank=rank, world=world, device=device)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if rank == 0:
            torch.save({k: v.cpu() for k, v in model.state_dict().items()}, Path(folder) / "model.pt")
            (Path(folder) / "history.json").write_text(json.dumps(history))
            checkpoint = ray.train.Checkpoint.from_directory(folder)
        ray.train.report({"best_epoch": history[0]["best_epoch"]}, checkpoint=checkpoint)


def fit_with_ray_train(model: Recommender, split: Split, cfg: SeerecConfig, run_dir: Path) -> list[dict]:
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipeline.runtime import init_ray

    tcfg = cfg.train
    init_ray(cfg.ray)
    gpus = ray.cluster_resources().get("GPU", 0)
    use_gpu = tcfg.device == "cuda" or (tcfg.device == "auto" and gpus >= tcfg.workers)
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"model": model.cpu(), "split": split, "tcfg": tcfg},
        scaling_config=ScalingConfig(num_workers=tcfg.workers, use_gpu=use_gpu),
        run_config=RunConfig(name="ray-train", storage_path=str((run_dir / "ray").resolve())),
    )
    result = trainer.fit()
    with result.checkpoint.as_directory() as folder:
        model.load_state_dict(torch.load(Path(folder) / "model.pt", map_location="cpu", weights_only=True))
        history = json.loads((Path(folder) / "history.json").read_text())
    if hasattr(model, "stale"):
        model.stale = True
    return history
