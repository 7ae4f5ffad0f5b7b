"""Data-parallel training through Ray Train (`train.workers > 1`): the shared loop, on several workers.

Each worker gets a copy of the (untrained) model and the split and runs `recommenders.train.fit` on every
world-th user, with Ray Train's `prepare_model` as its `wrap`: PyTorch's DistributedDataParallel, which
starts every worker from rank 0's weights and averages gradients in buckets during backward (Gloo on CPUs,
NCCL on GPUs, set up by `TorchTrainer`). DDP replaced a hand-written all-reduce of every gradient after
backward because no measurement asked for keeping it: SASRec on 3,000 synthetic users, 2 CPU workers, 5
epochs, on a busy 2-core machine, trained in 13.0 s with DDP and 12.9 s with the hand-written loop (the
same test NDCG@10), and the test's run reaches the same metrics with both.

Buffers are not broadcast (`broadcast_buffers=False`): every worker derives them identically in `prepare`
from the full training split, and LightGCN's propagated-embedding buffer is too large to send every step.
Rank 0 reports the best epoch's model (`Recommender.save`) as a Ray Train checkpoint, which the driver
loads back with `weights_only=True`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from pipeline.config import SeerecConfig
from recommenders.base import Recommender
from recommenders.data import Split
from recommenders.train import fit


def _worker(config: dict) -> None:
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    model: Recommender = config["model"]

    def wrap(module: Recommender) -> torch.nn.Module:
        return ray.train.torch.prepare_model(module, parallel_strategy_kwargs={"broadcast_buffers": False})

    history = fit(model, config["split"], config["tcfg"], rank=rank, world=world,
                  device=ray.train.torch.get_device(), wrap=wrap)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if rank == 0:
            model.save(folder)
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
        return json.loads((Path(folder) / "history.json").read_text())
