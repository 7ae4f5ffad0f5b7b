"""What a local job prints when nobody watches a terminal, and how it ends on Ctrl-C or SIGTERM: real
`python -m jobs.embed` processes with stdout and stderr piped, on a small text catalog and the packaged MiniLM
encoder."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.compute as pc
import pytest
import yaml

from pipeline.config import StoreConfig, load_config
from pipeline.logs import RESUME_HINT
from pipeline.runtime import FamilyWriter
from pipeline.schema import vector_family
from pipeline.store import ItemStore
from tests.test_store import catalog_rows, family_rows, random_vectors
from tests.test_troubleshooting import documented

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 240
# Lines only Ray itself writes: its Python loggers ("2026-01-01 00:00:00,000\tWARNING file.py:1 -- ...") and its
# C++ core ("[2026-01-01 00:00:00,000 E 123 123] file.cc:1: ...").
RAY_WARNING = re.compile(r"^\S+ \S+\s+(WARNING|ERROR)\b|^\[\S+ \S+ [WEF] \d+ \d+\]|Warning:", re.MULTILINE)


def write_config(tmp_path: Path, n_items: int, **store) -> Path:
    manifest = tmp_path / "items.csv"
    manifest.write_text("item_id,media_uri,media_type,title\n"
                        + "".join(f"i{i},,text,item {i} is about topic {i % 7}\n" for i in range(n_items)))
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump({
        "store": {"uri": str(tmp_path / "store"), **store}, "ray": {"num_cpus": 2, "progress_log_s": 0.5},
        "ingest": {"path": str(manifest)},
        "embed": {"image": {"enabled": False}, "text": {"items_per_batch": 4, "encode_batch_size": 4}}}))
    return config


def job(stage: str, config: Path, stdout, stderr, cli: bool = False) -> subprocess.Popen:
    """`python -m jobs.<stage> -c config` (as `ray job submit` runs it), or the `seerec <stage>` command."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    entry = ["jobs.cli", stage] if cli else [f"jobs.{stage}"]
    return subprocess.Popen([sys.executable, "-m", *entry, "-c", str(config)], cwd=REPO, env=env,
                            stdout=stdout, stderr=stderr, text=True)


def run_job(stage: str, config: Path) -> subprocess.CompletedProcess:
    process = job(stage, config, subprocess.PIPE, subprocess.PIPE)
    out, err = process.communicate(timeout=TIMEOUT_S)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_outside_a_terminal_the_writer_logs_progress_lines_instead_of_a_bar(tmp_path, caplog):
    store = ItemStore(StoreConfig(uri=str(tmp_path / "store")))
    store.create_if_missing()
    store.upsert(catalog_rows([f"i{i}" for i in range(1500)]))
    family = vector_family("vec", 4)
    writer = FamilyWriter(store, family, total=1500, stage="embed-text", log_every_s=1e-9)  # stderr is captured
    assert writer.bar.disable
    with caplog.at_level("INFO", logger="seerec"):
        writer.add(family_rows(family, [f"i{i}" for i in range(1200)], random_vectors(1200, 4)))
        writer.add(family_rows(family, [f"i{i}" for i in range(1200, 1500)], random_vectors(300, 4),
                               errors=["boom"] * 300))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("embed-text:")]
    assert [line.rsplit(",", 1)[0] for line in lines] == ["embed-text: 1,200/1,500 items, 0 failed",
                                                          "embed-text: 1,500/1,500 items, 300 failed"]
    assert all(re.search(r", [\d.]+ items/s$", line) for line in lines)


# Enough items that the job is still running when its first progress line (after 0.5 s) has been read: 400 were
# all embedded before the interrupt landed on a faster 2-core machine.
N_ITEMS = 2000


def interrupt_mid_stage(tmp_path: Path, config: Path, sig: signal.Signals, cli: bool) -> tuple[int, str, int]:
    """Start `embed`, send `sig` once its first progress line is out (results are reaching the driver), and
    return the exit code, its stderr and how many distinct items are staged or done after it."""
    out, err = tmp_path / f"embed-{sig.name}.out", tmp_path / f"embed-{sig.name}.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = job("embed", config, stdout, stderr, cli=cli)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while "embed-text: " not in out.read_text():
            assert process.poll() is None, err.read_text()[-3000:]
            assert time.monotonic() < deadline, "the stage never got going"
            time.sleep(0.1)
        process.send_signal(sig)
        code = process.wait(timeout=TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
    store = ItemStore(load_config(config).store)
    # Distinct items: an interrupt just after an append committed stages that flush twice (merged once).
    staged = {i for name in store.staging_tables("text_vec")
              for i in store.db.open_table(name).to_arrow()["item_id"].to_pylist()}
    done = set()
    if "text_vec" in store.schema.names:
        rows = store.scan(["item_id", "text_vec"])
        done = set(rows.filter(rows["text_vec"].is_valid())["item_id"].to_pylist())
    kept = len(staged | done)
    assert 0 < kept < N_ITEMS, "the interrupt came too early or too late to test a resume"
    return code, err.read_text(), kept


def rerun_resumes(config: Path, kept: int) -> subprocess.CompletedProcess:
    """Re-run the job: it skips the `kept` items, embeds the rest, and leaves every item with one vector."""
    rerun = run_job("embed", config)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = " ".join(rerun.stdout.split())  # log lines wrap outside a terminal
    assert f"{N_ITEMS} items, {kept} skipped as already done, {N_ITEMS - kept} done, 0 failed" in summary, summary
    store = ItemStore(load_config(config).store)
    rows = store.scan(["item_id", "text_vec"])
    assert rows.num_rows == N_ITEMS and pc.count_distinct(rows["item_id"]).as_py() == N_ITEMS
    assert rows["text_vec"].null_count == 0 and store.staging_tables("text_vec") == []
    return rerun


@pytest.mark.slow
def test_ctrl_c_then_sigterm_mid_stage_are_one_line_each_and_a_piped_rerun_resumes_without_bars_or_warnings(
        tmp_path):
    """One job interrupted twice, as each Ray start costs seconds: Ctrl-C stops `seerec embed` (exit 130), SIGTERM
    (`timeout`, a scheduler stopping `python -m jobs.embed`, as `ray job submit` runs it) stops the run that
    resumed it (exit 143, 128 + 15, the code a scheduler reads as "terminated"), both with the same one line, and
    a third, piped run finishes every item exactly once."""
    ctrl_c, ctrl_c_exit = documented("Ctrl-C (SIGINT) while a stage runs (`seerec embed`, `python -m jobs.embed`, …)")
    message, sigterm_exit = documented("SIGTERM (`timeout 600 seerec embed …`, a scheduler stopping the job)")
    assert ctrl_c.split("`")[0] == f"interrupted: {RESUME_HINT}" and message == "the same line"  # the page says it
    config = write_config(tmp_path, N_ITEMS, write_batch_rows=64)
    assert run_job("ingest", config).returncode == 0
    first_kept = 0
    for sig, cli, exit_code, exit_cell in ((signal.SIGINT, True, 130, ctrl_c_exit),
                                          (signal.SIGTERM, False, 143, sigterm_exit)):
        code, err, kept = interrupt_mid_stage(tmp_path, config, sig, cli=cli)
        assert code == exit_code and exit_cell.split()[0] == str(exit_code), err[-3000:]
        assert err.strip().splitlines()[-1] == f"interrupted: {RESUME_HINT}", err[-3000:]
        assert err.count("interrupted") == 1 and "Traceback" not in err, err[-3000:]
        assert not RAY_WARNING.search(err), err[-3000:]
        assert kept > first_kept  # the second run resumed where the first stopped, and added to it
        first_kept = kept

    rerun = rerun_resumes(config, kept)
    printed = rerun.stdout + rerun.stderr
    assert "\r" not in printed  # no bar, ours, Ray Data's or a worker's, redraws itself inside the log
    assert not RAY_WARNING.search(printed), printed[-3000:]
    for text in ("Token authentication", "constructor arguments", "Progress bars disabled", "deprecated"):
        assert text not in printed, printed[-3000:]
    progress = re.findall(rf"embed-text: ([\d,]+)/{N_ITEMS - kept:,} items, (\d+) failed, [\d.]+ items/s", rerun.stdout)
    assert progress and all(failed == "0" for _, failed in progress), rerun.stdout
