"""`seerec submit` and `ray job submit` against a real multi-process Ray cluster (tests/helpers.py)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import yaml
from ray._private.thirdparty.pathspec import PathSpec  # what Ray matches runtime_env excludes with

from jobs.common import job_main
from jobs.ingest import run_ingest
from jobs.submit import (
    EXCLUDES,
    EXIT_CODES,
    EXIT_INTERRUPTED,
    auth_headers,
    connect,
    entrypoint_resources,
    follow,
    job_stages,
    job_status,
    submission,
    submit,
)
from pipeline.config import ConfigError, load_config
from pipeline.store import ItemStore
from tests.helpers import REPO, LocalCluster, marked_pids

SEEREC = Path(sys.executable).with_name("seerec")
RAY = Path(sys.executable).with_name("ray")
TITLES = {"t1": "a dog on a skateboard", "t2": "noodles cooked in a wok", "t3": "a calm lake at dawn"}


@pytest.fixture
def config_file(tmp_path) -> Path:
    """A config outside the repository: three text items, a fresh store in tmp_path, text embedding only."""
    manifest = tmp_path / "items.csv"
    manifest.write_text("item_id,media_uri,media_type,title\n"
                        + "".join(f"{key},,text,{title}\n" for key, title in TITLES.items()))
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump({
        "store": {"uri": str(tmp_path / "store"), "write_batch_rows": 64},
        "ingest": {"source": "manifest", "path": str(manifest)},
        "embed": {"text": {"items_per_batch": 8, "num_cpus": 1}, "image": {"enabled": False}},
    }))
    return path


# ---- submission pieces, no cluster ----------------------------------------------------------------------
def test_stages_are_the_jobs_modules_that_run_a_stage():
    assert job_stages() == ["ablate", "describe", "describe_audio", "embed", "ingest", "quantize", "recommend",
                            "train", "transcribe"]


def test_submission_ships_the_resolved_config_and_excludes_local_state(config_file, tmp_path):
    cfg = load_config(config_file, ["store.uri=./stores/x"])
    kwargs = submission("embed", "store: {}\n", ["--force"], REPO, cfg, {"A": "1"}, [])
    assert kwargs["entrypoint"] == "python -m jobs.embed --config-env SEEREC_CONFIG_YAML --force"
    env = kwargs["runtime_env"]
    assert env["working_dir"] == str(REPO) and env["env_vars"] == {"A": "1", "SEEREC_CONFIG_YAML": "store: {}\n"}
    spec = PathSpec.from_lines("gitwildmatch", env["excludes"])  # the matcher Ray applies to excludes
    for shipped in ("jobs/submit.py", "configs/production-gpu.yaml", "jobs/ingest.py", "tests/helpers.py"):
        assert not spec.match_file(shipped)
    for skipped in (".venv/bin/python", ".git/HEAD", "stores/x/items.lance/data/0.lance", "runs/a/model.pt",
                    "benchmarks/.cache/x.bin", "jobs/__pycache__/cli.cpython-311.pyc", "seerec.egg-info/PKG-INFO"):
        assert spec.match_file(skipped), skipped
    assert "/stores/x/" in env["excludes"] and EXCLUDES[0] == ".venv/"
    with pytest.raises(ConfigError, match="unknown stage 'embedd'"):
        submission("embedd", "", [], REPO, cfg, {}, [])


def test_address_comes_from_ray_address_and_flags_are_checked_before_connecting(config_file):
    """Nothing listens on port 9: reaching the connect step at all shows where the address came from."""
    unreachable = "http://127.0.0.1:9"
    via_env = _seerec("submit", "ingest", "-c", str(config_file), env={"RAY_ADDRESS": unreachable})
    assert via_env.returncode == 2 and f"cannot reach the Ray dashboard at {unreachable}" in via_env.stderr
    flag = _seerec("submit", "ingest", "--address", unreachable, "-c", str(config_file), "--no-such-flag")
    assert flag.returncode == 2, flag.stderr
    assert "ingest has no flag --no-such-flag; it takes none of its own" in flag.stderr
    assert "cannot reach" not in flag.stderr
    with pytest.raises(ConfigError, match="embed has no flag --forse; it takes --force"):
        submission("embed", "", ["--forse"], REPO, load_config(config_file), {}, [])


def test_entrypoint_resources_and_token():
    assert entrypoint_resources(None, 1, '{"node_b": 1}') == {
        "entrypoint_num_cpus": None, "entrypoint_num_gpus": 1, "entrypoint_resources": {"node_b": 1}}
    for bad in ("{node_b: 1}", '["node_b"]', '{"node_b": "one"}'):
        with pytest.raises(ConfigError, match="--resources"):
            entrypoint_resources(None, None, bad)


def test_token_comes_from_file_or_env(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    assert auth_headers(None) == {}
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert auth_headers(None) == {"Authorization": "Bearer from-env"}
    (tmp_path / "token").write_text("from-file\n")
    assert auth_headers(tmp_path / "token") == {"Authorization": "Bearer from-file"}
    with pytest.raises(ConfigError, match="does not exist"):
        auth_headers(tmp_path / "absent")


def test_job_reads_a_config_shipped_in_the_environment(config_file, monkeypatch):
    seen = []
    monkeypatch.setenv("SHIPPED", config_file.read_text())
    assert job_main(seen.append, "test", ["--config-env", "SHIPPED", "store.table=other"]) == 0
    assert seen[0].store.table == "other" and seen[0].ingest.source == "manifest"
    assert job_main(seen.append, "test", ["--config-env", "ABSENT_VARIABLE"]) == 2


# ---- a real cluster -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(head_cpus=2) as local:
        local.add_node(num_cpus=1, resources={"node_b": 1})
        yield local


@pytest.mark.slow
def test_submit_ingest_then_embed(cluster, config_file):
    out = io.StringIO()
    # The driver reserves node_b, so the ingest job runs on the second node.
    assert submit("ingest", cluster.dashboard_url, config_file, resources='{"node_b": 1}', out=out) == 0
    assert "ingest [manifest:items.csv]: 3 items" in " ".join(out.getvalue().split())
    out = io.StringIO()
    assert submit("embed", cluster.dashboard_url, config_file, ["embed.text.items_per_batch=2"], out=out) == 0
    assert "embed-text" in out.getvalue()
    rows = {row["item_id"]: row for row in ItemStore(load_config(config_file).store).scan().to_pylist()}
    assert {key: row["title"] for key, row in rows.items()} == TITLES
    assert all(len(row["text_vec"]) == 384 and row["text_vec_error"] is None for row in rows.values())


@pytest.mark.slow
def test_failing_jobs_exit_nonzero(cluster, config_file):
    out = io.StringIO()
    assert submit("ingest", cluster.dashboard_url, config_file, ["ingest.path=/absent/items.csv"], out=out) == 1
    assert "error:" in out.getvalue() and "/absent/items.csv" in out.getvalue()


@pytest.mark.slow
def test_no_wait_and_interrupt_leave_the_job_alone(cluster, config_file):
    """A job asking for a resource no node has stays pending, which makes following it observable."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(cluster.dashboard_url)
    pending = ["submit", "ingest", "--address", cluster.dashboard_url, "-c", str(config_file),
               "--resources", '{"absent": 1}']
    done = _seerec(*pending, "--no-wait")
    job_id = done.stdout.strip()
    assert done.returncode == 0 and client.get_job_status(job_id) == JobStatus.PENDING

    follower, job_id = _follow(*pending)
    follower.send_signal(signal.SIGINT)
    code, stderr = follower.wait(30), follower.stderr.read()
    assert code == EXIT_INTERRUPTED, stderr
    assert f"ray job stop {job_id}" in stderr
    assert not client.get_job_status(job_id).is_terminal()


class FlakyDashboard:
    """A real client to the cluster whose first status request fails as an overloaded dashboard's would."""

    def __init__(self, client):
        self.client, self.failed = client, False

    def get_job_status(self, job_id):
        if not self.failed:
            self.failed = True
            raise requests.ConnectionError("Read timed out")
        return self.client.get_job_status(job_id)

    def tail_job_logs(self, job_id):
        return self.client.tail_job_logs(job_id)


@pytest.mark.slow
def test_following_rides_out_a_dashboard_hiccup(cluster, capsys):
    client = connect(cluster.dashboard_url, {})
    job_id = client.submit_job(entrypoint="python -c 'print(\"hello\")'")
    out = io.StringIO()
    assert follow(FlakyDashboard(client), job_id, out) == "SUCCEEDED"
    assert "hello" in out.getvalue()
    assert f"asking again for the status of {job_id}: Read timed out" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="the Ray dashboard gave no status for job absent-job .*404"):
        job_status(client, "absent-job", patience_s=0)


@pytest.mark.slow
def test_following_a_stopped_job_reports_stopped(cluster):
    client = connect(cluster.dashboard_url, {})
    job_id = client.submit_job(entrypoint="python -c 'import time; print(\"started\", flush=True); time.sleep(300)'")
    out = io.StringIO()
    with ThreadPoolExecutor(1) as pool:
        followed = pool.submit(follow, client, job_id, out)
        deadline = time.monotonic() + 60
        while "started" not in out.getvalue():
            assert time.monotonic() < deadline, "the job never printed"
            time.sleep(0.5)
        client.stop_job(job_id)
        assert followed.result(timeout=60) == "STOPPED" and EXIT_CODES["STOPPED"] == 3


@pytest.mark.slow
def test_ray_job_submit_runs_a_stage_module(cluster, config_file):
    done = subprocess.run([str(RAY), "job", "submit", "--address", cluster.dashboard_url, "--working-dir", ".", "--",
                           "python", "-m", "jobs.ingest", "--config", str(config_file)],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env=_without_ray_address())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "succeeded" in done.stdout
    assert ItemStore(load_config(config_file).store).count() == len(TITLES)


@pytest.mark.slow
def test_token_authentication(config_file, tmp_path):
    """A head started with RAY_AUTH_MODE=token refuses a submission without the token and runs one with it."""
    token = uuid.uuid4().hex
    run_ingest(load_config(config_file))  # so that the submitted embed job has items to work on
    with LocalCluster(head_cpus=2, env={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}) as secured:
        # A client machine without any token: no RAY_AUTH_TOKEN, and no ~/.ray/auth_token in its home.
        refused = _seerec("submit", "embed", "--address", secured.dashboard_url, "-c", str(config_file),
                          env={"HOME": str(tmp_path / "home")})
        assert refused.returncode == 2 and "Missing authentication token" in refused.stderr, refused.stderr
        wrong = _seerec("submit", "embed", "--address", secured.dashboard_url, "-c", str(config_file),
                        env={"RAY_AUTH_TOKEN": "not-the-token"})
        assert wrong.returncode == 2 and "Invalid authentication token" in wrong.stderr, wrong.stderr
        (tmp_path / "token").write_text(token)
        out = io.StringIO()
        assert submit("embed", secured.dashboard_url, config_file, token_file=tmp_path / "token", out=out) == 0, \
            out.getvalue()
        assert "embed-text" in out.getvalue()
    assert not marked_pids(lambda value: value.startswith(f"{secured.id}/")) and not secured.temp_dir.exists()
    assert ItemStore(load_config(config_file).store).count("text_vec IS NOT NULL") == len(TITLES)


@pytest.mark.slow
def test_local_cluster_node_failure_and_teardown():
    from ray.util.state import list_nodes

    with LocalCluster(head_cpus=1, head_resources={"head_only": 1}) as local:
        node = local.add_node(num_cpus=1, resources={"node_b": 1})
        alive = {n.node_id: n.resources_total for n in list_nodes(local.gcs_address) if n.state == "ALIVE"}
        assert len(alive) == 2 and sorted(r.get("node_b", 0) + r.get("head_only", 0) for r in alive.values()) == [1, 1]
        os.kill(node.raylet_pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while len([n for n in list_nodes(local.gcs_address) if n.state == "ALIVE"]) > 1:
            assert time.monotonic() < deadline, "the killed node is still alive"
            time.sleep(1)
    assert not marked_pids(lambda value: value.startswith(f"{local.id}/")) and not local.temp_dir.exists()


def _seerec(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(SEEREC), *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**_without_ray_address(), **(env or {})})


def _follow(*args: str) -> tuple[subprocess.Popen, str]:
    """Start `seerec` following a job; returns the process and the job id once it is submitted."""
    follower = subprocess.Popen([str(SEEREC), *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, env=_without_ray_address())
    for line in follower.stderr:
        if "as Ray job" in line:
            return follower, line.split("as Ray job ")[1].split()[0]
    raise AssertionError(f"seerec exited with {follower.wait()} before submitting")


def _without_ray_address() -> dict[str, str]:
    """This process's environment without what would steer Ray's client: RAY_ADDRESS / RAY_API_SERVER_ADDRESS
    (preferred over --address) and the token settings (an in-process `ray.init` sets RAY_AUTH_MODE=token here,
    which makes the client send the token of ~/.ray)."""
    steering = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")
    return {k: v for k, v in os.environ.items() if k not in steering}
