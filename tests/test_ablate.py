"""`seerec ablate`: the grid on a real small store with real Ray, resume (also after a real SIGKILL), gains and
the paired test, bad input.

The store holds the 60 topic items of tests/test_recommenders.py with two vector columns: text_vec (topic
plus noise) for every item and noise_vec (pure noise) for 50 of them, and a duration in the metadata of 55.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from jobs import cli
from jobs.ablate import main as job_main
from jobs.ablate import run_ablation
from jobs.cli import app
from pipeline.config import AblateConfig, ConfigError, StoreConfig, validate_config
from pipeline.schema import KEY, TIMESTAMP, catalog_schema, vector_family, vector_type
from pipeline.store import ItemStore
from recommenders import ablation as ab
from recommenders.data import RecommenderError
from tests.helpers import REPO, kill_session
from tests.test_recommenders import FAST, N_ITEMS, synthetic_frame, topic_vectors

NOW = datetime(2024, 6, 1, tzinfo=UTC)
TINY_SASREC = {"hidden": 16, "layers": 1, "heads": 1, "max_len": 10}


def write_vectors(store: ItemStore, column: str, ids: list[str], vectors: np.ndarray) -> None:
    family, n = vector_family(column, vectors.shape[1]), len(ids)
    store.write_family(family, pa.table({
        KEY: ids, column: pa.array([list(map(float, v)) for v in vectors], vector_type(vectors.shape[1])),
        family.model_column: ["test"] * n, family.time_column: pa.array([NOW] * n, TIMESTAMP),
        family.error_column: pa.nulls(n, pa.string()), f"{column}_source": ["test"] * n}))


def ablation_config(tmp_path: Path, **ablate):
    store = ItemStore(StoreConfig(uri=str(tmp_path / "store")))
    if not store.exists():
        store.create_if_missing()
        ids = [str(i) for i in range(N_ITEMS)]
        metadata = [json.dumps({"duration": int(i)}) if int(i) < 55 else None for i in ids]  # 5 without one
        store.upsert(pa.Table.from_pylist(
            [{"item_id": i, "media_type": "video", "title": f"item {i}", "metadata": m, "ingest_source": "test",
              "ingested_at": NOW} for i, m in zip(ids, metadata, strict=True)], schema=catalog_schema()))
        write_vectors(store, "text_vec", ids, topic_vectors())
        write_vectors(store, "noise_vec", ids[:50], np.random.default_rng(3).standard_normal((50, 8)))
        synthetic_frame().to_csv(tmp_path / "interactions.csv", index=False)
    return validate_config({
        "store": {"uri": str(tmp_path / "store")},
        "quantize": {"codebook_size": 4, "kmeans_iters": 5},
        "train": {"epochs": 2, "runs_dir": str(tmp_path / "runs"), **FAST,
                  "data": {"path": str(tmp_path / "interactions.csv")},
                  "two_tower": {"dim": 16, "hidden": 32}, "sasrec": TINY_SASREC, "sasrec_content": TINY_SASREC,
                  "lightgcn": {"dim": 16, "layers": 1},
                  "tiger": {"d_model": 16, "encoder_layers": 1, "decoder_layers": 1, "heads": 2, "ff": 32,
                            "user_buckets": 0, "beam_size": 10, "max_items": 5}},
        "ablate": {"name": "abl", "splits": ["leave-one-out", "cold-start"],
                   "feature_sets": ["text_vec", "text_vec+noise_vec"], **ablate}})  # the default models


def metrics_times(out: Path) -> dict[str, float]:
    return {str(p.parent.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("metrics.json")}


def test_grid_writes_the_table_and_a_rerun_skips_finished_cells(tmp_path, ray_local):
    """Every model of the default grid runs as a cell (tiny), so a cell type that breaks fails here."""
    cfg = ablation_config(tmp_path)
    table = run_ablation(cfg)
    out = tmp_path / "runs" / "abl"
    defaults = AblateConfig()
    # 2 splits x (3 ID-only models + 2 feature sets x 4 models)
    assert len(table) == 22 and set(table.split) == {"leave-one-out", "cold-start"}
    assert set(table[table.feature_set == ab.ID_ROW].model) == set(defaults.reference_models)
    assert set(table[table.feature_set == "text_vec"].model) == set(defaults.models)
    assert table[["masked_ndcg@10", "unmasked_ndcg@10", "valid_ndcg@10"]].notna().all().all()
    for name in ("ablation.md", "ablation.csv", "ablation.json", "ablation.png"):
        assert (out / name).is_file(), name
    assert {"sid_text_vec", "sid_text_vec_noise_vec"} <= set(ItemStore(cfg.store).schema.names)
    tiger = yaml.safe_load((out / "leave-one-out/text_vec+noise_vec/tiger/config.yaml").read_text())
    assert tiger["train"]["tiger"]["semantic_id_column"] == "sid_text_vec_noise_vec"
    # gains: the baseline row has none, the other feature set has one per model, with a p-value
    base = table[table.feature_set == "text_vec"]
    other = table[table.feature_set == "text_vec+noise_vec"]
    assert base["gain_ndcg@10"].isna().all()
    has_base = other.merge(base, on=["split", "model"], suffixes=("", "_base"))["masked_ndcg@10_base"] > 0
    assert (other["gain_ndcg@10"].notna().to_numpy() == has_base.to_numpy()).all()  # no gain over a zero
    row = other[(other.split == "leave-one-out") & (other.model == "two_tower")].iloc[0]
    ref = base[(base.split == "leave-one-out") & (base.model == "two_tower")].iloc[0]
    assert row["gain_ndcg@10"] == pytest.approx((row["masked_ndcg@10"] - ref["masked_ndcg@10"]) / ref["masked_ndcg@10"])
    assert 0 <= row["p_value"] <= 1
    md = (out / "ablation.md").read_text()
    assert "history masked" in md and "paired t-test" in md and "| ID only |" in md
    unmasked = md.split("## leave-one-out")[1].split("The same cells, history unmasked")[1].split("##")[0]
    two_tower = f"{row['unmasked_recall@10']:.4f} / {row['unmasked_ndcg@10']:.4f} |"  # values only, no gains
    assert two_tower in unmasked.split("| text_vec+noise_vec |")[1].splitlines()[0] and "%" not in unmasked
    assert "noise_vec: 10 of 60 items have no vector" in md  # text_vec+noise_vec misses 10 items
    report = json.loads((out / "ablation.json").read_text())
    assert set(report["breakdowns"]["leave-one-out"]) == {"training popularity", "duration"}
    durations = report["breakdowns"]["leave-one-out"]["duration"]["leave-one-out/text_vec/two_tower"]
    assert {g["group"] for g in durations} <= {"short (<=18.0s)", "medium (<=36.0s)", "long (>36.0s)",
                                               "unknown duration"}
    assert sum(g["users"] for g in durations) == len(pd.read_csv(out / "leave-one-out/text_vec/two_tower/"
                                                                   "test_per_user.csv"))
    # the cold-start split's targets were never trained on: one popularity group, all cold
    cold = report["breakdowns"]["cold-start"]["training popularity"]["cold-start/text_vec/content_knn"]
    assert [g["group"] for g in cold] == ["cold (0 training interactions)"]

    before = metrics_times(out)
    run_ablation(cfg)  # everything finished with the same settings: nothing trains again
    assert metrics_times(out) == before

    # a killed cell: its folder exists but holds no cell.json (and a half-written run)
    broken = out / "cold-start/text_vec/two_tower"
    (broken / ab.CELL_FILE).unlink()
    (broken / "metrics.json").unlink()
    changed = out / "leave-one-out/text_vec/content_knn"  # and a cell whose settings changed
    marker = json.loads((changed / ab.CELL_FILE).read_text())
    (changed / ab.CELL_FILE).write_text(json.dumps({**marker, "config_hash": "other"}))
    run_ablation(cfg)
    after = metrics_times(out)
    retrained = {k for k in after if after[k] != before.get(k)}
    assert retrained == {"cold-start/text_vec/two_tower", "leave-one-out/text_vec/content_knn"}


def test_cli_prints_the_table_and_bad_input_is_one_sentence(tmp_path, capsys, monkeypatch, ray_local):
    """The cells print as `seerec compare` prints its runs (key columns only when wider than the terminal); the
    gains are over the ID-only row here (ablate.baseline: ids)."""
    cfg = ablation_config(tmp_path, splits=["leave-one-out"], feature_sets=["text_vec"], models=["content_knn"],
                          reference_models=["popularity"], baseline=ab.ID_ROW)
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    for width, wide in ((400, True), (120, False)):  # the second run trains nothing: both cells are finished
        console = Console(width=width, record=True, file=open(tmp_path / f"out{width}.txt", "w"))  # noqa: SIM115
        monkeypatch.setattr(cli, "console", console)
        result = CliRunner().invoke(app, ["ablate", "-c", str(config)])  # content_knn and popularity, as Ray tasks
        assert result.exit_code == 0, result.output
        text = console.export_text()
        assert "content_knn" in text and "popularity" in text and "gain_ndcg@10" in text
        assert ("p_value" in text) is wide and ("every column is in" in text) is not wide
    report = json.loads((tmp_path / "runs" / "abl" / "ablation.json").read_text())
    assert "gain over the ID-only row's popularity cell" in report["caption"]
    knn, pop = (next(c for c in report["cells"] if c["model"] == m) for m in ("content_knn", "popularity"))
    assert knn["gain_ndcg@10"] == pytest.approx((knn["masked_ndcg@10"] - pop["masked_ndcg@10"]) / pop["masked_ndcg@10"])
    assert pop["gain_ndcg@10"] is None  # the baseline row has none
    for override, message in [
        ("ablate.feature_sets=[clip_vec]", "error: the store has no feature column 'clip_vec'; its vector columns "
                                           "are: text_vec, noise_vec"),
        ("ablate.models=[nope]", "error: 'nope' is not a registered model; the models are: "),
        ("ablate.models=[sasrec]", "error: ablate.models lists 'sasrec', which reads no item features; list it in "
                                   "ablate.reference_models (the ID-only row)"),
    ]:
        assert job_main(["-c", str(config), override]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(message), lines
    result = CliRunner().invoke(app, ["ablate", "-c", str(config), "ablate.models=[nope]"])
    assert result.exit_code == 2


def test_paired_t_test_and_gains_on_known_input():
    # differences 1, 0, 0, 1: mean 0.5, sd sqrt(1/3), t = 0.5 / (sd / 2) = sqrt(3), df 3
    test = ab.paired_t_test(np.array([1.0, 0, 1, 1]), np.array([0.0, 0, 1, 0]))
    assert test["t"] == pytest.approx(np.sqrt(3)) and test["mean_diff"] == 0.5
    assert test["p"] == pytest.approx(0.18169, abs=1e-4)  # two-sided t distribution, 3 degrees of freedom
    assert ab.paired_t_test(np.ones(5), np.ones(5))["p"] == 1.0
    assert ab.paired_t_test(np.ones(5), np.zeros(5))["p"] == 0.0
    with pytest.raises(RecommenderError, match="same users"):
        ab.paired_t_test(np.ones(3), np.ones(4))
    assert ab.relative_gain(0.3, 0.2) == pytest.approx(0.5) and ab.relative_gain(0.3, 0.0) is None
    # add_gains: per-user ranks of a baseline cell and a better one
    ranks = {"base": [0, 20, 20, 20, 20, 20], "better": [0, 0, 0, 0, 0, 20]}
    per_user = {f"s/{fs}/m": pd.DataFrame({"user_id": list("abcdef"), "rank": r}) for fs, r in ranks.items()}
    rows = [{"split": "s", "feature_set": fs, "model": "m", "masked_recall@10": np.mean(np.array(r) < 10),
             "masked_ndcg@10": np.mean(np.where(np.array(r) < 10, 1.0, 0.0)), "run": f"s/{fs}/m"}
            for fs, r in ranks.items()]
    table = ab.add_gains(pd.DataFrame(rows), per_user, "base", "masked", 0.05)
    better = table[table.feature_set == "better"].iloc[0]
    assert better["gain_ndcg@10"] == pytest.approx(4.0)  # 5/6 over 1/6
    assert better["p_value"] == pytest.approx(ab.paired_t_test([1, 1, 1, 1, 1, 0], [1, 0, 0, 0, 0, 0])["p"])
    assert better["p_value"] == pytest.approx(0.0250, abs=1e-4) and bool(better["significant"])
    # the ID-only row as the baseline: each feature set's cell against the ID-only cell of the model named
    rows.append({"split": "s", "feature_set": ab.ID_ROW, "model": "pop", "masked_recall@10": 2 / 6,
                 "masked_ndcg@10": 2 / 6, "run": "s/ids/pop"})
    per_user["s/ids/pop"] = pd.DataFrame({"user_id": list("abcdef"), "rank": [0, 0, 20, 20, 20, 20]})
    gains = ab.add_gains(pd.DataFrame(rows), per_user, ab.ID_ROW, "masked", 0.05, "pop").set_index("feature_set")
    assert gains.at["better", "gain_ndcg@10"] == pytest.approx(1.5)  # 5/6 over 2/6
    assert gains.at["base", "gain_ndcg@10"] == pytest.approx(-0.5)  # 1/6 over 2/6
    assert np.isnan(gains.at[ab.ID_ROW, "gain_ndcg@10"])
    assert validate_config({"ablate": {"baseline": "ids"}}).ablate.baseline_cell_model == "popularity"
    for settings, message in [({"baseline": "ids", "reference_models": []}, "needs ablate.reference_models"),
                              ({"baseline": "ids", "baseline_model": "tiger"}, "is not one of ablate.reference_models"),
                              ({"baseline_model": "sasrec"}, "applies to ablate.baseline 'ids' (the ID-only row)")]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            validate_config({"ablate": settings})


def test_feature_sets_default_to_the_store_vector_columns(tmp_path):
    from jobs.ablate import store_feature_sets

    cfg = ablation_config(tmp_path)
    assert store_feature_sets(ItemStore(cfg.store)) == ["text_vec", "noise_vec"]
    assert ab.sid_column("title_vec+desc_vec") == "sid_title_vec_desc_vec"
    groups = ab.duration_groups(np.array([1.0, 2, 3, 4, 5, 6, np.nan]))
    expected = ["short (<=2.7s)"] * 2 + ["medium (<=4.3s)"] * 2 + ["long (>4.3s)"] * 2 + ["unknown duration"]
    assert list(groups) == expected


@pytest.mark.slow
def test_a_killed_ablation_resumes_without_retraining_its_finished_cells(tmp_path, ray_local):
    """SIGKILL a real `python -m jobs.ablate` (its own local Ray) once a cell has finished: the re-run trains only
    the other cells, and its table equals an uninterrupted run's."""
    settings = {"splits": ["leave-one-out"], "feature_sets": ["text_vec", "noise_vec", "text_vec+noise_vec"],
                "models": ["content_knn"], "reference_models": ["popularity"]}  # deterministic: tables compare equal
    cfg = ablation_config(tmp_path, **settings)
    job_cfg = cfg.model_copy(deep=True)
    job_cfg.ray.num_cpus = 1  # one cell at a time: the kill lands between cells
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(job_cfg.model_dump(mode="json")))
    out, log = tmp_path / "runs" / "abl", tmp_path / "job.log"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local Ray of its own, as `seerec ablate`
    with log.open("w") as sink:
        job = subprocess.Popen([sys.executable, "-m", "jobs.ablate", "-c", str(config)], cwd=REPO, env=env,
                               stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while job.poll() is None and not any(out.rglob(ab.CELL_FILE)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert job.poll() is None, f"the job ended before the kill ({job.returncode}):\n{log.read_text()[-3000:]}"
        os.kill(job.pid, signal.SIGKILL)  # the driver, as `kill -9` would
        job.wait()
    finally:
        kill_session(job.pid)  # what the driver's Ray left behind, its workers too, and nothing else
    cells = ab.grid(cfg, settings["feature_sets"])
    runs = {cell.path: ab.cell_config(cfg, cell) for cell in cells}
    done = {path for path, run in runs.items() if ab.finished(run)}
    assert 1 <= len(done) < len(cells), f"{len(done)} of {len(cells)} cells finished before the kill"
    before = metrics_times(out)
    resumed = run_ablation(cfg)
    after = metrics_times(out)
    assert {path for path in done if after[path] == before[path]} == done  # not trained again
    assert set(after) == set(runs) and all(after[p] != before.get(p) for p in set(runs) - done)
    whole = run_ablation(ablation_config(tmp_path, name="whole", **settings))
    pd.testing.assert_frame_equal(resumed.drop(columns="seconds"), whole.drop(columns="seconds"))


def test_embed_texts_builds_the_store_and_a_rerun_embeds_and_trains_nothing(tmp_path, capsys, monkeypatch, ray_local):
    """`ablate.embed_texts`: one `seerec ablate` ingests a catalog into a store that does not exist yet and embeds
    two text columns with the packaged MiniLM (the ingest and embed jobs' own code), then trains; run again, every
    item is skipped as embedded by the same model and every cell as finished. A bad template is one sentence."""
    import jobs.ablate as job

    topics = ["telescope lens", "glass beaker", "lab gloves", "digital scale", "microscope slide", "safety goggles"]
    pd.DataFrame({"item_id": [str(i) for i in range(N_ITEMS)], "media_uri": "", "media_type": "text",
                  "title": [f"{topics[i % 6]} {i}" for i in range(N_ITEMS)],
                  "description": [f"A {topics[i % 6]} for the laboratory, model {i}." for i in range(N_ITEMS)]}
                 ).to_csv(tmp_path / "catalog.csv", index=False)  # `description` lands in the metadata
    synthetic_frame(n_users=60).to_csv(tmp_path / "interactions.csv", index=False)
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump({
        "store": {"uri": str(tmp_path / "store")},
        "ingest": {"source": "manifest", "path": str(tmp_path / "catalog.csv")},
        "embed": {"text": {"items_per_batch": 64}},
        "train": {"epochs": 1, "runs_dir": str(tmp_path / "runs"), **FAST,
                  "data": {"path": str(tmp_path / "interactions.csv")}},
        "ablate": {"name": "abl", "feature_sets": ["title_vec", "desc_vec"], "models": ["content_knn"],
                   "reference_models": ["popularity"],
                   "embed_texts": {"title_vec": "{title}", "desc_vec": "{meta[description]}"}}}))
    built = []
    for name in ("run_ingest", "run_embed"):
        real = getattr(job, name)
        monkeypatch.setattr(job, name, lambda cfg, real=real: built.append(real(cfg)) or built[-1])

    result = CliRunner().invoke(app, ["ablate", "-c", str(config)])
    assert result.exit_code == 0, result.output
    ingest, [title], [desc] = built
    assert ingest.stage == "ingest" and ingest.done == N_ITEMS
    assert (title.stage, title.done, desc.done) == ("embed-text", N_ITEMS, N_ITEMS)
    store = ItemStore(StoreConfig(uri=str(tmp_path / "store")))
    texts = store.scan([KEY, "title_vec_source", "desc_vec_source"]).to_pylist()
    assert {(r["title_vec_source"], r["desc_vec_source"]) for r in texts} == {("{title}", "{meta[description]}")}
    out = tmp_path / "runs" / "abl"
    table = pd.read_csv(out / "ablation.csv")
    assert set(zip(table.feature_set, table.model, strict=True)) == {
        (ab.ID_ROW, "popularity"), ("title_vec", "content_knn"), ("desc_vec", "content_knn")}

    before, version = metrics_times(out), store.table.version
    built.clear()
    assert CliRunner().invoke(app, ["ablate", "-c", str(config)]).exit_code == 0
    assert [(s.stage, s.total, s.skipped, s.done) for [s] in built] == [("embed-text", N_ITEMS, N_ITEMS, 0)] * 2
    assert metrics_times(out) == before and ItemStore(store.cfg).table.version == version  # no ingest, no write

    for override, message in [
        ('ablate.embed_texts={title_vec: "{titel}"}', "error: ablate.embed_texts title_vec: the store has no column "
                                                      "'titel'; available: item_id, "),
        ('ablate.embed_texts={desc_vec: "{meta[description]"}', "error: ablate.embed_texts desc_vec: template "
                                                                "'{meta[description]' cannot be read"),
        ('ablate.embed_texts={text_vec: "{title}"}', "error: config key 'ablate' is invalid: ablate.embed_texts lists "
                                                     "'text_vec', which no feature set reads"),
    ]:
        assert job_main(["-c", str(config), override]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(message), lines
