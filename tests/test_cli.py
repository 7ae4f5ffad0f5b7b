"""The `seerec` CLI and the `python -m jobs.<stage>` entry points, run as real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.store import ItemStore
from tests.helpers import REPO

SEEREC = str(Path(sys.executable).with_name("seerec"))


# Some commands start Ray and load models; on a busy 2-core machine that can take minutes, so the limit only
# catches a hang.
TIMEOUT_S = 900


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=TIMEOUT_S)


def test_help_lists_every_command():
    result = run(SEEREC, "--help")
    assert result.returncode == 0
    for command in ("ingest", "embed", "quantize", "search", "store", "config", "demo"):
        assert command in result.stdout


@pytest.mark.parametrize("job", ["ingest", "embed", "quantize"])
def test_jobs_run_as_modules(job):
    result = run(sys.executable, "-m", f"jobs.{job}", "--help")
    assert result.returncode == 0 and "--config" in result.stdout


def test_bad_config_is_one_sentence_and_exit_2(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("embed:\n  text:\n    items_per_batc: 3\n")
    for command in ([SEEREC, "embed", "-c", str(config)], [sys.executable, "-m", "jobs.embed", "-c", str(config)]):
        result = run(*command)
        assert result.returncode == 2
        message = result.stderr.strip()
        assert len(message.splitlines()) == 1
        assert "embed.text.items_per_batc" in message and "did you mean 'items_per_batch'" in message
        assert "Traceback" not in message


def test_config_command_prints_resolved_yaml(tmp_path):
    """The YAML opens with a comment naming the folder relative paths resolve against (where seerec runs, not
    the config file's folder), so a user reading `./store` knows which one it is."""
    result = run(SEEREC, "config", "embed.text.items_per_batch=64", "store.uri=s3://bucket/seerec", cwd=tmp_path)
    assert result.returncode == 0
    assert "items_per_batch: 64" in result.stdout and "uri: s3://bucket/seerec" in result.stdout
    comment = " ".join(line.removeprefix("# ") for line in result.stdout.splitlines() if line.startswith("#"))
    assert comment.startswith("Relative paths (store.uri, ingest.path, media.roots, model folders")
    assert comment.endswith("resolve against the directory seerec runs in, not the config file's folder: "
                            f"{tmp_path.resolve()}")
    assert yaml.safe_load(result.stdout)["store"]["uri"] == "s3://bucket/seerec"  # still YAML as printed


def test_missing_store_is_a_clear_error(tmp_path):
    result = run(SEEREC, "search", "--item", "x", f"store.uri={tmp_path / 'none'}")
    assert result.returncode == 2 and "run `seerec ingest` first" in result.stderr


def test_an_error_of_any_layer_is_one_sentence_and_exit_2(tmp_path):
    """A TemplateError comes from the extractors, not from config validation: the front doors catch SeerecError."""
    from jobs.ingest import run_ingest
    from jobs.synthetic import make_catalog
    from pipeline.config import validate_config

    catalog = make_catalog(tmp_path / "catalog", n_items=5, n_users=1)
    store = f"store.uri={tmp_path / 'store'}"
    run_ingest(validate_config({"store": {"uri": str(tmp_path / "store")},
                                "ingest": {"source": "manifest", "path": str(catalog.manifest)}}))
    overrides = [store, "embed.text.template=no fields", "embed.image.enabled=false"]
    for command in ([SEEREC, "embed", *overrides], [sys.executable, "-m", "jobs.embed", *overrides]):
        result = run(*command)
        assert result.returncode == 2, result.stderr
        message = result.stderr.strip()
        assert len(message.splitlines()) == 1 and "names no item column" in message and "Traceback" not in message


def test_a_missing_model_is_one_sentence_before_ray_starts(tmp_path):
    store = f"store.uri={tmp_path / 'store'}"
    offline = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty-cache")}
    cases = [
        ([SEEREC, "describe", store, "describe.model=./nope"], None, "seerec make-test-model"),
        ([SEEREC, "embed", store, "embed.text.model=/nope", "embed.image.enabled=false"], None, "does not exist"),
        ([SEEREC, "embed", "-c", "configs/microlens-cpu.yaml", store], offline,
         "open_clip's weights 'laion2b_s34b_b79k' for ViT-B-32 (hub repo laion/CLIP-ViT-B-32-laion2B-s34B-b79K) "
         "is not in the local Hugging Face cache"),
        ([sys.executable, "-m", "jobs.describe", store, "describe.model=Qwen/Qwen2.5-VL-3B-Instruct"], offline,
         "huggingface-cli download Qwen/Qwen2.5-VL-3B-Instruct"),
    ]
    for command, env, expected in cases:
        result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=TIMEOUT_S)
        message = result.stderr.strip()
        assert result.returncode == 2, (command, result.stderr)
        assert len(message.splitlines()) == 1 and expected in message, message
        assert "Ray" not in result.stderr + result.stdout  # no cluster was started
    assert not (tmp_path / "store").exists()


def test_version_short_help_and_help_that_fits_the_command():
    assert run(SEEREC, "--version").stdout.strip().startswith("seerec 0.")
    assert "Usage: seerec" in run(SEEREC, "-h").stdout
    narrow = {**os.environ, "COLUMNS": "80"}
    examples = {"ingest": "ingest.source=microlens", "embed": "embed.text.items_per_batch=64",
                "describe": "describe.model=", "train": "train.epochs=20", "quantize": "quantize.levels=3"}
    for command, example in examples.items():
        result = subprocess.run([SEEREC, command, "-h"], capture_output=True, text=True, env=narrow, timeout=60)
        assert result.returncode == 0 and example in result.stdout, result.stdout
        if command != "embed":
            assert "embed.text.items_per_batch" not in result.stdout
    ingest = subprocess.run([SEEREC, "ingest", "-h"], capture_output=True, text=True, env=narrow, timeout=60).stdout
    assert "amazon-scientific" in ingest and "…" not in ingest and "--limit" in ingest
    train = subprocess.run([SEEREC, "train", "-h"], capture_output=True, text=True, env=narrow, timeout=60).stdout
    assert "tiger" in train and "…" not in train


def test_version_and_help_import_no_engine():
    """`seerec --version` and `--help` answer at once: they load neither LanceDB, Ray, torch nor a model."""
    for flag in ("--version", "--help"):
        result = run(sys.executable, "-X", "importtime", "-m", "jobs.cli", flag)
        imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
        assert result.returncode == 0, result.stderr[-2000:]
        assert not imported & {"lancedb", "ray", "torch", "pandas", "recommenders.registry"}, flag


def test_ingest_limit(tmp_path):
    from jobs.synthetic import make_catalog

    catalog = make_catalog(tmp_path / "catalog", n_items=12, n_users=1)
    result = run(SEEREC, "ingest", "--path", str(catalog.manifest), "--limit", "5", f"store.uri={tmp_path / 'store'}")
    assert result.returncode == 0, result.stderr
    info = run(SEEREC, "store", "info", f"store.uri={tmp_path / 'store'}")
    assert "· 5 items" in info.stdout, info.stdout  # the line may wrap after it on a narrow terminal


@pytest.mark.slow
def test_search_json_columns_filters_and_the_configs_encoder(tmp_path):
    """search embeds queries with the config's encoder, checked against the column's record, loaded once."""
    from extractors.search import _text_embedder, text_query_vector
    from jobs.synthetic import make_catalog
    from pipeline.config import load_config

    catalog = make_catalog(tmp_path / "catalog", n_items=6, n_users=1)
    store = f"store.uri={tmp_path / 'store'}"
    assert run(SEEREC, "ingest", "--path", str(catalog.manifest), store).returncode == 0
    assert run(SEEREC, "embed", store, "embed.image.enabled=false").returncode == 0, "embed failed"

    found = run(SEEREC, "search", store, "--text", "ocean", "-k", "3", "--json", "--columns", "item_id,title,_distance")
    assert found.returncode == 0, found.stderr
    rows = json.loads(found.stdout)
    assert len(rows) == 3 and all(set(row) == {"item_id", "title", "_distance"} for row in rows)

    bad_filter = run(SEEREC, "search", store, "--text", "ocean", "--where", "nope = 1", "embed.text.model=/nope")
    assert bad_filter.returncode == 2 and "nope" in bad_filter.stderr and "/nope" not in bad_filter.stderr
    assert len(bad_filter.stderr.strip().splitlines()) == 1
    other = run(SEEREC, "search", store, "--text", "ocean", "embed.text.model=sentence-transformers/other")
    assert other.returncode == 2, other.stderr
    assert "was embedded by sentence-transformers/all-MiniLM-L6-v2, but the config's encoder is " \
           "sentence-transformers/other" in other.stderr
    unknown = run(SEEREC, "search", store, "--item", rows[0]["item_id"], "--columns", "item_id,nope")
    assert unknown.returncode == 2 and "no column 'nope'" in unknown.stderr

    cfg = load_config(None, [store])
    items = ItemStore(cfg.store)
    _text_embedder.cache_clear()  # an earlier test in this process may have loaded an encoder
    first, again = (text_query_vector(items, cfg, "text_vec", query) for query in ("ocean", "cat"))
    assert first.shape == again.shape == (384,) and _text_embedder.cache_info().misses == 1


def test_make_test_model_builds_a_clip_too(tmp_path):
    from extractors.embed import ClipEmbedder

    result = run(SEEREC, "make-test-model", "--kind", "clip", str(tmp_path / "clip"))
    assert result.returncode == 0, result.stderr
    assert "embed.image.model=local-dir:" in " ".join(result.stdout.split())
    clip = ClipEmbedder({"model": f"local-dir:{tmp_path / 'clip'}", "pretrained": None, "device": "cpu"})
    assert clip.dim == 64
    assert run(SEEREC, "make-test-model", "--kind", "bert", str(tmp_path / "x")).returncode == 2
