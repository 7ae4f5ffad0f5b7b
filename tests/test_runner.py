"""The stage runner: a stage declared here, in the test, runs end to end on a real store with a real local Ray."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import ray.cloudpickle

from jobs.ingest import run_ingest
from pipeline.config import StageSection
from pipeline.runner import run_stage
from pipeline.schema import description_family, vector_family
from pipeline.stage import FirstResult, Stage
from pipeline.store import ItemStore


class TitleLengthConfig(StageSection):
    column: str = "title_len"


class TitleLength:
    """The stage's "model": a title's length in characters and in words. An item without a title fails."""

    def __init__(self, cfg: TitleLengthConfig | dict):
        self.cfg = TitleLengthConfig.model_validate(cfg)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        titles = [t if isinstance(t, str) else "" for t in batch["title"]]
        vectors = np.array([[len(t), len(t.split())] for t in titles], np.float32)
        errors = np.array([None if t else "no title to measure" for t in titles], dtype=object)
        return {"item_id": batch["item_id"], "vector": vectors, "error": errors}


# Ray workers cannot import a test module, so its classes travel to them by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

SECTION = TitleLengthConfig(items_per_batch=2)

TITLE_LENGTH = Stage(
    name="title-length", section=lambda cfg: SECTION, model=TitleLength, output="vector",
    model_id=lambda section: "title-length:v1", family=lambda section: vector_family(section.column),
    reads=lambda section: ["title"], constants=lambda cfg, section: {"source": "{title}"}, metrics=(FirstResult,),
)

TITLES = {"a": "one", "b": "two words", "c": "", "d": "a title of five words", "e": "x"}


@pytest.fixture
def text_store(make_config, tmp_path):
    manifest = tmp_path / "items.csv"
    manifest.write_text("item_id,media_uri,media_type,title\n"
                        + "".join(f"{item},,text,{title}\n" for item, title in TITLES.items()))
    cfg = make_config(ingest={"source": "manifest", "path": str(manifest)})
    run_ingest(cfg)
    return cfg


@pytest.mark.slow
def test_declared_stage_runs_resumes_and_records_errors(text_store, ray_local):
    first = run_stage(TITLE_LENGTH, text_store)
    assert (first.stage, first.total, first.skipped, first.done, first.failed) == ("title-length", 5, 0, 4, 1)
    assert first.extra["first_result_items"] > 0
    store = ItemStore(text_store.store)
    rows = {r["item_id"]: r for r in store.scan().to_pylist()}
    assert store.schema.field("title_len").type.list_size == 2  # the width came from the first batch
    tag = store.tags()[-1]  # the version the stage ended at is labelled with it
    assert (tag["stage"], tag["model"], tag["column"], tag["version"]) == ("title-length", "title-length:v1",
                                                                          "title_len", store.table.version)
    assert rows["d"]["title_len"] == [21.0, 5.0] and rows["b"]["title_len"] == [9.0, 2.0]
    assert rows["a"]["title_len_model"] == "title-length:v1" and rows["a"]["title_len_source"] == "{title}"
    assert rows["c"]["title_len"] is None and rows["c"]["title_len_error"] == "no title to measure"

    before = store.scan(["item_id", "title_len_at"]).sort_by("item_id")
    again = run_stage(TITLE_LENGTH, text_store)
    # Only the failed item is tried again (and fails again); the done ones are not touched.
    assert (again.skipped, again.done, again.failed) == (4, 0, 1)
    after = store.scan(["item_id", "title_len_at"]).sort_by("item_id")
    changed = [i for i, b, a in zip(before["item_id"].to_pylist(), before["title_len_at"].to_pylist(),
                                     after["title_len_at"].to_pylist(), strict=True) if a != b]
    assert changed == ["c"]

    forced = run_stage(TITLE_LENGTH, text_store, force=True)
    assert (forced.skipped, forced.done, forced.failed) == (0, 4, 1)
    assert store.count() == len(TITLES)  # stage writes never add rows


@pytest.mark.slow
def test_a_killed_runs_flushed_rows_are_adopted_not_redone(text_store, ray_local):
    """A job killed after some flushes left them in its staging table; the next run merges them and does the rest."""
    store = ItemStore(text_store.store)
    family = vector_family("title_len", 2)
    staged = family.rows(["a", "b"], np.full((2, 2), 99.0, np.float32).tolist(), "title-length:v1", [None, None],
                         source="{title}")
    store.stage_family(family, staged, "0" * 32)  # flushed, never merged: the job died here
    assert "title_len" not in store.schema.names
    assert store.staging_tables("title_len") == ["items__stage__title_len__" + "0" * 32]

    summary = run_stage(TITLE_LENGTH, text_store)
    assert (summary.total, summary.skipped, summary.done, summary.failed) == (5, 2, 2, 1)
    rows = {r["item_id"]: r["title_len"] for r in store.scan(["item_id", "title_len"]).to_pylist()}
    assert rows["a"] == rows["b"] == [99.0, 99.0]  # the flushed work was kept, not recomputed
    assert rows["d"] == [21.0, 5.0] and rows["c"] is None
    assert store.count() == len(TITLES) and store.staging_tables("title_len") == []


def test_batch_rows_give_a_vector_family_its_width_and_null_failed_vectors():
    batch = {"item_id": np.array(["a", "b"], object), "vector": np.ones((2, 3), np.float32),
             "error": np.array([None, "boom"], object)}
    rows = vector_family("v").batch_rows(batch, "vector", "m1", source="{title}")
    assert rows.schema.field("v").type.list_size == 3
    assert rows["v"].to_pylist() == [[1.0, 1.0, 1.0], None]
    assert rows["v_error"].to_pylist() == [None, "boom"] and rows["v_source"].to_pylist() == ["{title}"] * 2
    assert vector_family("v").of_rows(rows) == vector_family("v", 3)


def test_batch_rows_take_per_item_extras_by_suffix_and_drop_non_text():
    family = description_family()
    batch = {"item_id": np.array(["a", "b"], object), "description": np.array(["text", float("nan")], object),
             "error": np.array([None, "boom"], object), "prompt_id": np.array(["p1", float("nan")], object),
             "prompt_tokens": np.array([3, 0], np.int32), "tokens": np.array([5, 0], np.int32)}
    rows = family.batch_rows(batch, "description", "m1", params="{}")
    assert rows.schema == family.schema()
    assert rows["description"].to_pylist() == ["text", None]
    assert rows["description_prompt_id"].to_pylist() == ["p1", None]
    assert rows["description_tokens"].to_pylist() == [5, 0] and rows["description_params"].to_pylist() == ["{}"] * 2
    assert family.extra_column("prompt_id") == "description_prompt_id"
    with pytest.raises(TypeError, match="no column"):
        family.extra_column("prompt")
