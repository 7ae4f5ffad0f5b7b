"""`seerec submit`: run one stage on a Ray cluster as a Ray job, stream its logs, and exit with its outcome.

The config is loaded and validated here, before anything is uploaded, and the *resolved* config (file plus
overrides plus defaults) travels with the job in the SEEREC_CONFIG_YAML environment variable, read by
`python -m jobs.<stage> --config-env SEEREC_CONFIG_YAML`. So the job runs exactly what was validated, and the
config file may live anywhere, also outside the uploaded working directory. Relative paths in it (store.uri,
ingest.path) still resolve on the cluster, against the job's working directory.

Exit codes: 0 SUCCEEDED, 1 FAILED, 3 STOPPED, 130 when following is interrupted with Ctrl-C (the job keeps
running), 2 for a mistake found before submitting (as every seerec command) or for a dashboard that stops
answering while the job is followed.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import pkgutil
import shlex
import sys
import time
from pathlib import Path
from typing import TextIO

import yaml

import jobs
from pipeline.config import ConfigError, SeerecConfig, load_config

CONFIG_ENV = "SEEREC_CONFIG_YAML"
EXIT_CODES = {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": 3}
EXIT_INTERRUPTED = 130
LOG_GRACE_S = 10
STATUS_PATIENCE_S = 60
# Never worth uploading: environments, version control, local item stores and outputs. Ray also skips what
# the working directory's .gitignore lists; these hold when there is none.
EXCLUDES = [".venv/", ".git/", "__pycache__/", "*.egg-info/", "*.lance/", "/stores/", "/seerec-store/", "/runs/",
            "/demo-out/", "/benchmarks/.cache/"]


class SubmitError(ConfigError):
    """A submission that cannot go ahead as asked; shown as one sentence (exit code 2), like a config error."""


# The jobs package's modules that are not stages: the other front doors, the demo's builders and shared code.
NOT_STAGES = frozenset({"cli", "common", "demo", "reference", "submit", "tiny_models"})


def job_stages() -> list[str]:
    """The stages `python -m jobs.<stage>` can run: every plain module of the jobs package but NOT_STAGES."""
    return sorted(m.name for m in pkgutil.iter_modules(jobs.__path__) if not m.ispkg and m.name not in NOT_STAGES)


# Flags every job takes (jobs.common.job_main), besides its own FLAGS.
COMMON_FLAGS = ("--verbose", "-v")


def check_flags(stage: str, flags: list[str]) -> None:
    """Refuse a flag the stage's job would reject, before anything is uploaded or a cluster is contacted."""
    known = [f"--{flag}" for flag in importlib.import_module(f"jobs.{stage}").FLAGS]
    if bad := [flag for flag in flags if flag not in (*known, *COMMON_FLAGS)]:
        takes = f"it takes {', '.join(known)}" if known else "it takes none of its own"
        raise SubmitError(f"{stage} has no flag {bad[0]}; {takes} (overrides are written section.key=value)")


def resolved_config(config: Path | None, overrides: list[str]) -> tuple[SeerecConfig, str]:
    """The validated config and its YAML, as the job will load it."""
    cfg = load_config(config, overrides)
    return cfg, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def submission(stage: str, config_yaml: str, flags: list[str], working_dir: Path, cfg: SeerecConfig,
               env: dict[str, str], pip: list[str]) -> dict:
    """`submit_job` keyword arguments: the entrypoint and a runtime_env shipping the code and the config."""
    if stage not in job_stages():
        raise SubmitError(f"unknown stage {stage!r}; choose one of {', '.join(job_stages())}")
    if not working_dir.is_dir():
        raise SubmitError(f"working directory {working_dir} does not exist")
    check_flags(stage, flags)
    runtime_env = {"working_dir": str(working_dir), "excludes": [*EXCLUDES, *_local_store(cfg, working_dir)],
                   "env_vars": {**env, CONFIG_ENV: config_yaml}}
    if pip:
        runtime_env["pip"] = pip
    entrypoint = shlex.join(["python", "-m", f"jobs.{stage}", "--config-env", CONFIG_ENV, *flags])
    return {"entrypoint": entrypoint, "runtime_env": runtime_env}


def entrypoint_resources(num_cpus: float | None, num_gpus: float | None, resources: str | None) -> dict:
    """What the job's driver reserves; Ray places the driver on a node that has it (else on the head)."""
    parsed = None
    if resources is not None:
        try:
            parsed = json.loads(resources)
        except json.JSONDecodeError as exc:
            raise SubmitError(f"--resources is not valid JSON ({exc.msg}); pass e.g. '{{\"node_b\": 1}}'") from None
        if not isinstance(parsed, dict) or not all(isinstance(v, int | float) for v in parsed.values()):
            raise SubmitError("--resources must be a JSON object of resource names to numbers, e.g. '{\"node_b\": 1}'")
    return {"entrypoint_num_cpus": num_cpus, "entrypoint_num_gpus": num_gpus, "entrypoint_resources": parsed}


def auth_headers(token_file: Path | None) -> dict[str, str]:
    """The bearer token of a cluster started with RAY_AUTH_MODE=token: --token-file, else RAY_AUTH_TOKEN.

    With neither, Ray's own client still sends the token it finds when RAY_AUTH_MODE=token is set locally
    (RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token).
    """
    if token_file is not None:
        if not token_file.is_file():
            raise SubmitError(f"token file {token_file} does not exist")
        token = token_file.read_text().strip()
    else:
        token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def connect(address: str, headers: dict[str, str]):
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address, headers=headers)
    except ConnectionError as exc:
        raise SubmitError(f"cannot reach the Ray dashboard at {address}: {' '.join(str(exc).split())}") from None
    except AuthenticationError as exc:  # Ray's message goes on for a paragraph; its first line says which
        reason = str(exc).strip().splitlines()[0]
        raise SubmitError(f"the Ray cluster at {address} refused the token ({reason}); pass the cluster's "
                          "token with --token-file or RAY_AUTH_TOKEN") from None


def job_status(client, job_id: str, patience_s: float = STATUS_PATIENCE_S):
    """The job's status; a dashboard that is busy or restarting is asked again for up to `patience_s`.

    Ray's client raises RuntimeError for an HTTP error answer and requests' errors when the dashboard is
    unreachable. Either may be a moment's overload; past the patience it is one sentence (exit 2), not a
    traceback, and the job itself is not affected.
    """
    import requests

    deadline = time.monotonic() + patience_s
    while True:
        try:
            return client.get_job_status(job_id)
        except (RuntimeError, requests.RequestException) as exc:
            reason = " ".join(str(exc).split())
            if time.monotonic() >= deadline:
                raise SubmitError(f"the Ray dashboard gave no status for job {job_id} ({reason}); whatever the job "
                                  f"does goes on: look with `ray job status {job_id}`") from None
            print(f"asking again for the status of {job_id}: {reason}", file=sys.stderr)
            time.sleep(1)


def follow(client, job_id: str, out: TextIO) -> str:
    """Stream the job's driver output while polling its status; returns the final status name.

    The status decides the end, not the log stream: a job stopped before it started has no stream that ends.
    """

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    async def watch() -> str:
        logs = asyncio.create_task(tail())
        while not (status := await asyncio.to_thread(job_status, client, job_id)).is_terminal():
            await asyncio.sleep(1)
        await asyncio.wait({logs}, timeout=LOG_GRACE_S)  # the last lines may trail the status
        logs.cancel()
        if logs.done() and not logs.cancelled() and logs.exception():  # e.g. the head restarted mid-stream
            print(f"the log stream of {job_id} broke: {logs.exception()}", file=sys.stderr)
        return status.value

    return asyncio.run(watch())


def submit(stage: str, address: str, config: Path | None = None, args: list[str] = (), *,
           working_dir: Path = Path("."), env: dict[str, str] | None = None, pip: list[str] = (),
           num_cpus: float | None = None, num_gpus: float | None = None, resources: str | None = None,
           token_file: Path | None = None, wait: bool = True, out: TextIO = sys.stdout) -> int:
    """Validate, submit and (unless `wait` is False) follow one stage; returns the exit code.

    `args` mixes `section.key=value` overrides (folded into the shipped config) and the stage's own flags
    such as `--force` (passed to the job, which rejects ones it does not know).
    """
    flags = [a for a in args if a.startswith("-")]
    cfg, config_yaml = resolved_config(config, [a for a in args if not a.startswith("-")])
    kwargs = {**submission(stage, config_yaml, flags, working_dir.resolve(), cfg, env or {}, list(pip)),
              **entrypoint_resources(num_cpus, num_gpus, resources)}
    client = connect(address, auth_headers(token_file))
    job_id = client.submit_job(**kwargs)
    try:
        print(f"submitted {stage} as Ray job {job_id} to {address}", file=sys.stderr)
        if not wait:
            out.write(f"{job_id}\n")
            return 0
        status = follow(client, job_id, out)
    except KeyboardInterrupt:
        print(f"stopped following; job {job_id} keeps running. Stop it with `ray job stop {job_id} "
              f"--address {address}`, follow it with `ray job logs -f {job_id} --address {address}`.", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"job {job_id} {status}", file=sys.stderr)
    return EXIT_CODES[status]


def _local_store(cfg: SeerecConfig, working_dir: Path) -> list[str]:
    """The configured store, when it is a local folder inside the working directory, as an exclude pattern."""
    if "://" in cfg.store.uri:
        return []
    store = Path(cfg.store.uri)
    store = (store if store.is_absolute() else working_dir / store).resolve()
    return [f"/{store.relative_to(working_dir)}/"] if store.is_relative_to(working_dir) and store != working_dir else []
