"""What the tests share with each other and with benchmarks/: the repository's paths, the real data folder, and
a real multi-process Ray cluster on 127.0.0.1 (fixtures stay in conftest.py).

The cluster is one `ray start --head`, plus worker nodes:

    with LocalCluster(head_cpus=1) as cluster:
        node_b = cluster.add_node(num_cpus=1, resources={"node_b": 1})
        JobSubmissionClient(cluster.dashboard_url).submit_job(...)
        os.kill(node_b.raylet_pid, signal.SIGKILL)      # a node failure

Every node gets its own free ports, so several raylets share the host, and the cluster lives in its own short
`--temp-dir` under /tmp (Ray's Unix socket paths must stay under 107 characters). `ray stop` would stop every
Ray on the machine, including the in-process `ray.init` of other tests, so teardown instead kills exactly the
processes this cluster started: every node is started with a marker variable in its environment, which all of
its processes (GCS, raylet, dashboard, workers, job drivers) inherit, and `shutdown()` SIGKILLs every process
carrying the cluster's marker until none is left.

Token authentication is off unless asked for (`env={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": ...}`): left
unset, `ray start` would turn it on whenever a ~/.ray/auth_token exists.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

REPO = Path(__file__).resolve().parents[1]
# The real data sits next to the checkout; SEEREC_SHARED_DATA points elsewhere (e.g. from a second worktree).
SHARED_DATA = Path(os.environ.get("SEEREC_SHARED_DATA", REPO.parent / "shared" / "data"))


def require_shared(*parts: str) -> Path:
    """A path in the real data folder, or a skip of the calling test when the folder is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: these tests need the real data in ../shared/data")
    return path


# ---- a local multi-node Ray cluster ----------------------------------------------------------------------
RAY = Path(sys.executable).with_name("ray")
MARKER = "SEEREC_LOCAL_CLUSTER"
START_TIMEOUT_S = 90


@dataclass
class Node:
    """One `ray start` of the cluster; `marker` is the value its processes carry in the MARKER variable."""

    name: str
    marker: str
    ports: dict[str, int]

    @property
    def pids(self) -> list[int]:
        return marked_pids(lambda value: value == self.marker)

    @property
    def raylet_pid(self) -> int:
        """The node's raylet: SIGKILL it to make the node fail the way a lost machine does."""
        for pid in self.pids:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "raylet":
                return pid
        raise RuntimeError(f"node {self.name} has no raylet running")


class LocalCluster:
    """A head node started at construction; `add_node` joins more; `shutdown` (or leaving `with`) ends all."""

    def __init__(self, head_cpus: int = 1, head_resources: dict[str, float] | None = None,
                 env: dict[str, str] | None = None):
        self.id = uuid.uuid4().hex[:8]
        self.temp_dir = Path(tempfile.mkdtemp(prefix=f"rc{self.id}-", dir="/tmp"))
        # Job entrypoints run `python`: this interpreter's, as on a node where Ray's environment is active.
        path = f"{RAY.parent}{os.pathsep}{os.environ.get('PATH', '')}"
        self.env = {**os.environ, "PATH": path, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
                    **(env or {})}
        self.nodes: list[Node] = []
        try:
            self.head = self._start("head", head_cpus, head_resources, ["--head", "--include-dashboard=true",
                                                                        "--dashboard-host=127.0.0.1"])
        except BaseException:
            self.shutdown()
            raise

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.head.ports['port']}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.head.ports['dashboard-port']}"

    def add_node(self, num_cpus: int = 1, resources: dict[str, float] | None = None) -> Node:
        """Start a worker node that joins the head; returns once `ray start` has it registered."""
        return self._start(f"node{len(self.nodes)}", num_cpus, resources, [f"--address={self.gcs_address}"])

    def shutdown(self) -> None:
        """SIGKILL every process of this cluster (repeatedly: a dying raylet may still spawn workers)."""
        deadline = time.monotonic() + 30
        while pids := marked_pids(lambda value: value.startswith(f"{self.id}/")):
            for pid in pids:
                _kill(pid)
            if time.monotonic() > deadline:
                raise RuntimeError(f"processes {pids} of local cluster {self.id} survived SIGKILL")
            time.sleep(0.2)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc_info) -> None:
        self.shutdown()

    def _start(self, name: str, num_cpus: int, resources: dict[str, float] | None, extra: list[str]) -> Node:
        node = Node(name, f"{self.id}/{name}", _free_ports(_PORT_FLAGS if "--head" in extra else _NODE_PORT_FLAGS))
        self.nodes.append(node)
        command = [str(RAY), "start", *extra, "--node-ip-address=127.0.0.1", f"--temp-dir={self.temp_dir}",
                   f"--num-cpus={num_cpus}", f"--resources={json.dumps(resources or {})}", "--disable-usage-stats",
                   *(f"--{flag}={port}" for flag, port in node.ports.items())]
        env = {**self.env, MARKER: node.marker}
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=START_TIMEOUT_S)
        if done.returncode != 0:
            raise RuntimeError(f"`ray start` of {name} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return node


# Every port a node binds, so several nodes share one host; worker ports are left random (Ray's default).
_NODE_PORT_FLAGS = ("node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
                    "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port")
_PORT_FLAGS = ("port", "dashboard-port", "ray-client-server-port", *_NODE_PORT_FLAGS)


def vllm_gpu_missing() -> str | None:
    """Why the vLLM GPU tests cannot run here, or None where vLLM and a CUDA GPU exist."""
    try:
        import torch
        import vllm  # noqa: F401
    except ImportError:
        return "vLLM is not installed (it is a CUDA-only optional extra: pip install 'seerec[vllm]')"
    return None if torch.cuda.is_available() else "no CUDA GPU on this machine"


def _free_ports(flags: tuple[str, ...]) -> dict[str, int]:
    """Distinct ports the OS has just handed out (all held open together, so they cannot repeat)."""
    sockets = [socket.socket() for _ in flags]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return {flag: sock.getsockname()[1] for flag, sock in zip(flags, sockets, strict=True)}
    finally:
        for sock in sockets:
            sock.close()


def marked_pids(match) -> list[int]:
    """Live processes whose environment holds MARKER with a value that `match` accepts."""
    prefix = f"{MARKER}=".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours
            continue
        for item in environ.split(b"\0"):
            if item.startswith(prefix) and match(item[len(prefix):].decode()):
                found.append(int(entry.name))
    return found


def kill_session(sid: int, timeout_s: float = 30) -> None:
    """SIGKILL every live process of the session that a test started with `start_new_session=True`, until none is
    left: a SIGKILLed driver of a local Ray leaves its GCS, raylet and workers to die after it (or not), and Ray
    puts each worker in a process group of its own, so the session is what holds them all. Only this session:
    `ray stop` would end every Ray on the machine."""
    deadline = time.monotonic() + timeout_s
    while pids := session_pids(sid):
        for pid in pids:
            _kill(pid)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {pids} of session {sid} survived SIGKILL")
        time.sleep(0.2)


def session_pids(sid: int) -> list[int]:
    """Live processes of a session (zombies are dead already: their parent reaps them)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, _, _, session = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:4]
        except OSError:  # gone
            continue
        if int(session) == sid and state != "Z":
            found.append(int(entry.name))
    return found


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def flushed_descriptions(store) -> pa.Table:
    """The descriptions a describe job has flushed: in its staging table until the stage ends, then in the item
    table (a kill or a progress probe must look in both)."""
    columns = ["item_id", "description", "description_at"]
    tables = [store.db.open_table(name).to_arrow().select(columns) for name in store.staging_tables("description")]
    if "description" in store.schema.names:
        tables.append(store.scan(columns))
    rows = pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({c: [] for c in columns})
    return rows.filter(pc.is_valid(rows["description"]))
