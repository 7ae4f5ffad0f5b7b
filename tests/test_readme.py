"""The README's commands, run exactly as written, in a fresh folder where a small demo was run first.

`make demo` is the README's first command; here the demo runs smaller (`--items 40 --users 20`) so that the
suite stays quick, and its report is checked. Every other command the README shows is either run as written,
or listed in `NOT_RUN` with the reason and the test that covers it instead.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import ID_ROW, StoreConfig, load_config
from pipeline.schema import is_vector_field
from pipeline.store import ItemStore
from tests.helpers import REPO, require_shared

README = (REPO / "README.md").read_text()
SEEREC = Path(sys.executable).with_name("seerec")
TIMEOUT_S = 900  # the demo trains every model family; the limit only catches a hang

NOT_RUN = {
    "make demo": "the same `seerec demo` runs here at 40 items (test_the_demo_reports_every_stage)",
    "make test": "what CI runs; this test is part of it",
    "seerec ablate -c configs/ablation-scientific.yaml":
        "needs the Amazon Scientific data (about 8 min to build the store, then 29 min); its config is checked by "
        "test_shipped_configs_resolve_from_the_repository_root, the store build and the ablation by "
        "tests/test_ablate.py",
}


def commands_in(block: str) -> list[str]:
    """A bash block's commands, one per line: continuations joined, comments and blank lines dropped."""
    lines = (re.sub(r"\s+#.*$", "", line).strip() for line in block.replace("\\\n", " ").splitlines())
    return [re.sub(r"\s+", " ", line) for line in lines if line and not line.startswith("#")]


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, re.S)


def readme_commands() -> list[str]:
    """Every command the README shows: the lines of its bash blocks, and inline `seerec ... -c ...` spans."""
    return [c for block in bash_blocks() for c in commands_in(block)] + re.findall(r"`(seerec [^`]* -c [^`]*)`",
                                                                                   README)


def first_experiment() -> str:
    [block] = [b for b in bash_blocks() if "source .venv/bin/activate" in b]
    return block


EXPLORE = "seerec explore -c demo-out/config.yaml --run demo-out/runs/first"
RUN_HERE = [*commands_in(first_experiment()), EXPLORE]


@pytest.fixture(scope="module")
def here(tmp_path_factory) -> Path:
    """A folder like the repository root after `make demo`: `.venv` (this interpreter's) and `demo-out/`."""
    if not (Path(sys.prefix) / "bin" / "activate").is_file():
        pytest.skip(f"the README activates .venv; this Python ({sys.prefix}) is not in a virtual environment")
    folder = tmp_path_factory.mktemp("readme")
    (folder / ".venv").symlink_to(sys.prefix)
    result = subprocess.run([str(SEEREC), "demo", "--out", "demo-out", "--items", "40", "--users", "20"], cwd=folder,
                            capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return folder


def test_every_readme_command_is_run_or_excused():
    unaccounted = [c for c in readme_commands() if c not in RUN_HERE and c not in NOT_RUN]
    assert not unaccounted, f"README commands no test runs: {unaccounted}"
    assert "seerec embed -c demo-out/config.yaml embed.text.column=desc_vec 'embed.text.template={description}'" \
        in RUN_HERE


@pytest.mark.slow
def test_the_demo_reports_every_stage(here):
    report = json.loads((here / "demo-out" / "report.json").read_text())
    assert report["ingest"]["done"] == 40
    # text and image vectors of every item, CLAP vectors of the sound tracks of the 20 videos
    assert [s["done"] for s in report["embed"]] == [40, 40, 20]
    assert report["search"]["hits"]
    # Real MiniLM text vectors group items by their latent topic far above chance (1/8).
    assert report["search"]["topic_agreement@5"]["text_vec"] > 0.5
    assert report["quantize"]["done"] == 40 and "0 duplicate IDs" in report["quantize"]["diagnostics"]
    assert (here / "demo-out" / "tokenizer" / "diagnostics.png").is_file()
    audio = report["audio"]
    assert audio["transcribe"]["done"] == 20 and audio["describe_audio"]["done"] == 20
    assert [s["done"] for s in audio["embed_audio_descriptions"]] == [20]
    store = ItemStore(StoreConfig(uri=str(here / "demo-out" / "store")))
    sound = store.scan(["audio_vec", "audio_description", "audio_desc_vec", "transcript"], "media_type = 'video'")
    assert sound.num_rows == 20
    for column in ("audio_vec", "audio_description", "audio_desc_vec", "transcript"):
        assert sound[column].null_count == 0, column  # an empty transcript ("") is a result
    assert all(sound["audio_description"].to_pylist()) and np.isfinite(np.stack(sound["audio_vec"].to_numpy(
        zero_copy_only=False))).all()
    compared = {(row["model"], row["features"]) for row in report["recommenders"]}
    assert {("content_knn", "audio_vec"), ("content_knn", "audio_desc_vec")} <= compared
    # The ablation: every vector column of the store is a feature set, the visual, description and audio ones too.
    vectors = {field.name for field in store.schema if is_vector_field(field)}
    assert {"text_vec", "clip_vec", "desc_vec", "audio_vec", "audio_desc_vec"} <= vectors
    cells = report["ablation"]
    assert {(c["feature_set"], c["model"]) for c in cells} == {(ID_ROW, "popularity")} | {
        (v, m) for v in vectors for m in ("content_knn", "two_tower")}
    assert all(np.isfinite(c["masked_ndcg@10"]) for c in cells)
    ablation = here / "demo-out" / "runs" / "ablation"
    note = json.loads((ablation / "ablation.json").read_text())["note"]
    assert note in (ablation / "ablation.md").read_text() and "tiny random-weight models" in note
    assert all(v in note for v in vectors - {"text_vec"}), note  # it names every column from a random model


@pytest.mark.slow
def test_the_first_experiment_runs_as_written(here):
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", first_experiment()], cwd=here, capture_output=True,
                            text=True, timeout=TIMEOUT_S, env={**os.environ, "COLUMNS": "250"})  # unwrapped log lines
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    shown = re.search(r"```\n(Split: .*?)```", README, re.S).group(1).splitlines()
    printed = (here / "demo-out" / "runs" / "first" / "compare.md").read_text()
    assert printed.splitlines()[0].startswith("Split: leave-one-out") and "history masked" in printed
    header = next(line for line in shown if line.startswith("| model |"))
    assert header in printed.splitlines()  # the same columns as the README's table
    models = [line.split("|")[1].strip() for line in shown if line.startswith("| ") and "---" not in line][1:]
    assert [line.split("|")[1].strip() for line in printed.splitlines()
            if line.startswith("| ") and "---" not in line][1:] == models
    assert "40 items, 40 skipped as already done" in result.stdout  # desc_vec was filled by the demo: resume


@pytest.mark.slow
def test_the_explore_command_serves_the_demo(here):
    assert f"`{EXPLORE}` and open http://127.0.0.1:8000/" in README.replace("\n", " ")
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 8000)) == 0:
            pytest.fail("port 8000 is taken; the README's explore command needs it")
    server = subprocess.Popen(["bash", "-c", f"source .venv/bin/activate && exec {EXPLORE}"], cwd=here,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        page = _get("http://127.0.0.1:8000/", server)
        assert "syn-0001" in page
        assert "first" in _get("http://127.0.0.1:8000/runs", server)
    finally:
        server.terminate()
        server.wait(timeout=30)


def _get(url: str, server: subprocess.Popen, wait_s: float = 180) -> str:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.read().decode()
        except OSError as exc:
            if server.poll() is not None or time.monotonic() > deadline:
                said = server.stdout.read() if server.poll() is not None else ""
                raise AssertionError(f"{url} did not answer ({exc}): {said}") from None
            time.sleep(1)


@pytest.mark.parametrize("config", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_resolve_from_the_repository_root(config):
    """The README and docs run the shipped configs from the repository root; their relative data paths
    (ingest.path, train.data.path) must name files there."""
    cfg = load_config(config)
    paths = [p for p in (cfg.ingest.path, cfg.train.data.path) if p and "://" not in str(p)]
    local = [Path(p) for p in paths if not Path(p).is_absolute()]
    shared = [p for p in local if p.parts[:2] == ("..", "shared")]
    if shared:
        require_shared()
    missing = [str(p) for p in shared if not (REPO / p).exists()]
    assert not missing, f"{config.name}: {missing} do not exist relative to the repository root"
