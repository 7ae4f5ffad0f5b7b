"""seerec's jobs on a real multi-node Ray cluster of separate processes (tests/helpers.py), submitted through
the Jobs SDK: work lands on every node, two jobs write one store at once, and a node dies mid-job."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from jobs.ingest import run_ingest
from jobs.submit import EXIT_CODES, submit
from jobs.synthetic import make_catalog
from pipeline.config import load_config
from pipeline.store import ItemStore
from tests.helpers import REPO, LocalCluster, flushed_descriptions
from tests.test_store import assert_unique

pytestmark = pytest.mark.slow
SEEREC = Path(sys.executable).with_name("seerec")
JOB_TIMEOUT_S = 420


def write_config(tmp_path: Path, n_items: int, tiny_qwen: str, tiny_clip: str, max_new_tokens: int) -> Path:
    """A synthetic catalog, ingested into a fresh store, and the config every job of a test shares."""
    catalog = make_catalog(tmp_path / "syn", n_items=n_items, n_users=2, seed=11)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "store": {"uri": str(tmp_path / "store"), "write_batch_rows": 2},
        "media": {"num_frames": 4, "max_side": 96},
        "ingest": {"source": "manifest", "path": str(catalog.manifest)},
        "embed": {"text": {"items_per_batch": 8},
                  "image": {"model": tiny_clip, "pretrained": None, "items_per_batch": 4}},
        "describe": {"model": tiny_qwen, "items_per_batch": 2, "generation": {"max_new_tokens": max_new_tokens}},
    }))
    run_ingest(load_config(path))
    return path


def submit_detached(stage: str, cluster: LocalCluster, config: Path) -> str:
    out = io.StringIO()
    assert submit(stage, cluster.dashboard_url, config, working_dir=REPO, wait=False, out=out) == 0
    return out.getvalue().strip()


def client(cluster: LocalCluster):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(cluster.dashboard_url)


def wait_terminal(cluster: LocalCluster, job_id: str, timeout: float = JOB_TIMEOUT_S) -> str:
    jobs = client(cluster)
    deadline = time.monotonic() + timeout
    while not (status := jobs.get_job_status(job_id)).is_terminal():
        assert time.monotonic() < deadline, f"job {job_id} still {status.value} after {timeout}s"
        time.sleep(1)
    return status.value


def actor_nodes(cluster: LocalCluster, job_id: str, alive_only: bool = False) -> set[str]:
    """The node ids that ran (or, with alive_only, now run) the job's work: its Ray Data map actors, not the
    bookkeeping actors Ray Data keeps on the driver's node. From Ray's state API."""
    from ray.util.state import list_actors

    ray_job_id = client(cluster).get_job_info(job_id).job_id
    if ray_job_id is None:  # the driver has not started yet
        return set()
    filters = [("job_id", "=", ray_job_id)] + ([("state", "=", "ALIVE")] if alive_only else [])
    return {a.node_id for a in list_actors(address=cluster.dashboard_url, filters=filters, limit=1000,
                                           raise_on_missing_output=False) if a.class_name.startswith("MapWorker")}


def node_id(cluster: LocalCluster, resource: str) -> str:
    """The Ray node id of the node started with the custom resource `resource`."""
    from ray.util.state import list_nodes

    return next(n.node_id for n in list_nodes(address=cluster.dashboard_url, limit=100)
                if resource in n.resources_total and n.state == "ALIVE")


def store_rows(config: Path, columns: list[str]):
    store = ItemStore(load_config(config).store)
    assert_unique(store)
    return store.scan(["item_id", *columns])


def described(store: ItemStore) -> int:
    return flushed_descriptions(store).num_rows


def test_embed_and_describe_at_once_run_on_both_nodes_and_write_every_row_once(tmp_path, tiny_qwen, tiny_clip):
    """Two jobs commit to different columns of one store at the same time; both finish with all their rows."""
    config = write_config(tmp_path, 16, tiny_qwen, tiny_clip, max_new_tokens=16)
    # A head without CPUs runs only the drivers, as in production; the jobs' five one-CPU actors cannot fit
    # on one two-CPU worker, so both workers must take some.
    with LocalCluster(head_cpus=0) as cluster:
        cluster.add_node(num_cpus=2, resources={"node_b": 1})
        cluster.add_node(num_cpus=2, resources={"node_c": 1})
        nodes = {node_id(cluster, "node_b"), node_id(cluster, "node_c")}
        jobs = [submit_detached(stage, cluster, config) for stage in ("embed", "describe")]
        statuses = [wait_terminal(cluster, job) for job in jobs]
        logs = [client(cluster).get_job_logs(job) for job in jobs]
        assert statuses == ["SUCCEEDED", "SUCCEEDED"], logs
        used = actor_nodes(cluster, jobs[0]) | actor_nodes(cluster, jobs[1])
        assert used == nodes, f"actors ran on {used}, the nodes are {nodes}"
    rows = store_rows(config, ["text_vec", "clip_vec", "description", "description_error"])
    assert rows.num_rows == 16
    for column in ("text_vec", "clip_vec", "description"):
        assert rows[column].null_count == 0, f"{column} misses rows"


def test_worker_node_killed_mid_job_then_rerun_completes_exactly_once(tmp_path, tiny_qwen, tiny_clip):
    """SIGKILL the raylet of the worker running the describe actors; a replacement node joins, as an autoscaler
    would add one. The submitter sees the job's real outcome, and a re-run fills the store exactly once.

    The head has no CPUs (it runs only the driver, as in production), so every actor is on the doomed node."""
    n_items = 24  # the kill comes after 2 described rows; the rest is the re-run's
    config = write_config(tmp_path, n_items, tiny_qwen, tiny_clip, max_new_tokens=128)
    store = ItemStore(load_config(config).store)
    with LocalCluster(head_cpus=0) as cluster:
        node_b = cluster.add_node(num_cpus=2, resources={"node_b": 1})
        doomed = node_id(cluster, "node_b")
        log = tmp_path / "submit.log"
        with log.open("w") as stderr:
            submitter = subprocess.Popen(submit_command(cluster, config), stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            job_id = _job_id(log)
            deadline = time.monotonic() + JOB_TIMEOUT_S
            while described(store) < 2 or doomed not in actor_nodes(cluster, job_id, alive_only=True):
                assert time.monotonic() < deadline, "the job never got going on node_b"
                assert submitter.poll() is None, "the job ended before node_b could be killed"
                time.sleep(0.2)
            before_kill = described(store)
            assert before_kill < n_items, "the kill came too late"
            os.kill(node_b.raylet_pid, signal.SIGKILL)
            cluster.add_node(num_cpus=2, resources={"node_c": 1})
            code = submitter.wait(timeout=JOB_TIMEOUT_S)
        finally:
            if submitter.poll() is None:
                submitter.kill()
        status = client(cluster).get_job_status(job_id).value
        assert code == EXIT_CODES[status], log.read_text()[-3000:]  # the submitter reports what Ray reports
        assert f"job {job_id} {status}" in log.read_text()
        if status == "FAILED":
            assert client(cluster).get_job_info(job_id).message, "a failed job must say why"
        first = store.scan(["item_id", "description", "description_at"], "description IS NOT NULL").to_pylist()
        assert len(first) >= before_kill
        rerun = subprocess.run(submit_command(cluster, config), capture_output=True, text=True,
                               timeout=JOB_TIMEOUT_S)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
    final = store_rows(config, ["description", "description_at"])
    assert final.num_rows == n_items and final["description"].null_count == 0
    by_id = {r["item_id"]: r for r in final.to_pylist()}
    for row in first:  # the re-run redid nothing that was already written
        assert by_id[row["item_id"]]["description_at"] == row["description_at"]


def submit_command(cluster: LocalCluster, config: Path) -> list[str]:
    return [str(SEEREC), "submit", "describe", "--address", cluster.dashboard_url, "--config", str(config),
            "--working-dir", str(REPO)]


def _job_id(log: Path, timeout: float = 120) -> str:
    """The submission id from `seerec submit`'s first line on stderr."""
    deadline = time.monotonic() + timeout
    while not (match := re.search(r"as Ray job (\S+) to", log.read_text())):
        assert time.monotonic() < deadline, f"seerec submit printed no job id: {log.read_text()[-2000:]}"
        time.sleep(0.5)
    return match.group(1)
