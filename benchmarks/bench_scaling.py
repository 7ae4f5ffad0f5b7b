"""Scaling of the embed job over Ray nodes: 2 nodes x 1 CPU against 1 node x 1 CPU, on the same titles.

Each side is a real multi-process Ray cluster on this machine (tests/helpers.py: `ray start --head`, plus
`ray start --address=...` for the second node), and the job is submitted through the Jobs SDK, as on a real
cluster. Both sides embed the same MicroLens titles with all-MiniLM-L6-v2 into a fresh store; the two-node side
runs two encoder actors (one per node), the one-node side one. Throughput is the job's own items/s (from the
driver's summary line: encoder work plus store writes, without the cluster start or the code upload), and the
wall time from submission to SUCCEEDED is reported next to it.

Both nodes share this machine's cores, so the ratio says how well the job spreads over nodes, not what a
second machine would add.

    .venv/bin/python benchmarks/bench_scaling.py [--items 8000] [--out benchmarks/results/scaling.json]
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, write_result  # noqa: E402
from jobs.ingest import run_ingest  # noqa: E402
from jobs.submit import submit  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from tests.helpers import LocalCluster  # noqa: E402

MICROLENS = REPO.parent / "shared" / "data" / "microlens-sample"
SUMMARY = re.compile(r"embed-text \[.*?\]: (\d+) items.*?(\d+) done.*?([\d.]+)s \(([\d.]+) items/s\)")


def prepare(folder: Path, items: int, batch_size: int, actors: int) -> Path:
    """A store holding the first `items` MicroLens titles, and the config that embeds them with `actors` actors."""
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump({
        "store": {"uri": str(folder / "store")},
        "ingest": {"source": "microlens", "path": str(MICROLENS), "limit": items},
        "embed": {"text": {"items_per_batch": batch_size, "encode_batch_size": batch_size, "concurrency": actors,
                           "num_cpus": 1},
                  "image": {"enabled": False}},
    }))
    run_ingest(load_config(config))
    return config


def run_side(name: str, nodes: int, items: int, batch_size: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"scale-{name}-") as folder:
        config = prepare(Path(folder), items, batch_size, actors=nodes)
        with LocalCluster(head_cpus=1) as cluster:
            for n in range(1, nodes):
                cluster.add_node(num_cpus=1, resources={f"node_{n}": 1})
            logs = io.StringIO()
            started = time.perf_counter()
            code = submit("embed", cluster.dashboard_url, config, working_dir=REPO, out=logs)
            wall = time.perf_counter() - started
        # The driver's log handler wraps long lines; the summary is matched with whitespace collapsed.
        if code != 0 or not (match := SUMMARY.search(" ".join(logs.getvalue().split()))):
            raise RuntimeError(f"{name}: the embed job did not succeed (exit {code}):\n{logs.getvalue()[-3000:]}")
    total, done, seconds, rate = int(match[1]), int(match[2]), float(match[3]), float(match[4])
    print(f"{name}: {done}/{total} titles in {seconds:.1f}s of job time ({rate:.1f} items/s), {wall:.1f}s wall")
    return {"nodes": nodes, "cpus_per_node": 1, "encoder_actors": nodes, "items": total, "done": done,
            "job_seconds": seconds, "items_per_second": rate, "submit_to_finish_seconds": round(wall, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=8000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "scaling.json"))
    args = parser.parse_args()
    if not MICROLENS.exists():
        sys.exit(f"{MICROLENS} is absent: this benchmark needs the real MicroLens titles in ../shared/data")
    one = run_side("1 node x 1 CPU", 1, args.items, args.batch_size)
    two = run_side("2 nodes x 1 CPU", 2, args.items, args.batch_size)
    ratio = two["items_per_second"] / one["items_per_second"]
    wall_ratio = one["submit_to_finish_seconds"] / two["submit_to_finish_seconds"]
    print(f"ratio 2 nodes / 1 node: {ratio:.2f}x items/s ({wall_ratio:.2f}x by wall time)")
    write_result(args.out, {"benchmark": "embed job scaling over local Ray nodes", "model": "all-MiniLM-L6-v2",
                            "batch_size": args.batch_size, "one_node": one, "two_nodes": two,
                            "ratio_items_per_second": round(ratio, 3), "ratio_wall": round(wall_ratio, 3),
                            "caveat": "both nodes run on the same machine and share its cores"})


if __name__ == "__main__":
    main()
