"""Helpers shared by the benchmarks: time a function, and write a result JSON that says where it ran."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# The CPU-sized SASRec of the Beauty benchmarks: bench_sasrec_beauty tunes dropout, lr and width around it, and
# bench_tiger_ids exports its item embeddings as collaborative vectors.
BEAUTY_SASREC = {"hidden": 64, "layers": 2, "heads": 1, "dropout": 0.5, "max_len": 50, "loss": "ce"}


def add_loop_arguments(parser: argparse.ArgumentParser, epochs: int, patience: int) -> None:
    """The options of benchmarks that train through the shared loop `recommenders.train.fit`."""
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--patience", type=int, default=patience)
    parser.add_argument("--lr-plateau-factor", type=float, default=1.0,
                        help="multiply the lr by this after every epoch without a new best (train.lr_plateau_factor)")


def timed(fn: Callable[[], Any], repeat: int = 1) -> list[float]:
    """Wall-clock seconds of each of `repeat` calls of fn (time.perf_counter)."""
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def machine_info() -> dict[str, Any]:
    """Where and when a benchmark ran, so that numbers from different machines are not compared blindly."""
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": sys.version.split()[0],
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
    }


def write_result(path: str | Path, payload: dict[str, Any]) -> dict[str, Any]:
    """Write payload plus `machine` info as JSON (atomically: a half-written file never replaces a result)."""
    result = {**payload, "machine": {**machine_info(), **payload.get("machine", {})}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
    tmp.replace(path)
    return result


def git_commit(repo: Path = REPO) -> str | None:
    """The checked-out commit, read from .git without running git; None outside a checkout."""
    git = repo / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head  # detached HEAD
        ref = head.removeprefix("ref: ")
        if (git / ref).is_file():
            return (git / ref).read_text().strip()
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
