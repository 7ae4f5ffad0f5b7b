"""Tests for pipeline.store and pipeline.schema against a real LanceDB table in tmp_path."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline import store as store_module
from pipeline.config import StoreConfig
from pipeline.filters import FilterError
from pipeline.schema import (
    BAD_VECTOR,
    CATALOG_FIELDS,
    KEY,
    TIMESTAMP,
    Family,
    catalog_schema,
    description_family,
    error_values,
    is_vector_field,
    vector_family,
    vector_type,
)
from pipeline.store import ItemStore, StoreError, UpsertResult

NOW = datetime(2024, 6, 1, tzinfo=UTC)


# ---- helpers ---------------------------------------------------------------------------------------------
def make_store(tmp_path, **cfg) -> ItemStore:
    store = ItemStore(StoreConfig(uri=str(tmp_path / "store"), **cfg))
    store.create_if_missing()
    return store


def catalog_rows(ids, **columns) -> pa.Table:
    rows = []
    for i, item_id in enumerate(ids):
        row = {"item_id": item_id, "media_type": "text", "title": f"title {item_id}",
               "media_uri": f"/media/{item_id}", "ingest_source": "test", "ingested_at": NOW}
        row.update({name: values[i] for name, values in columns.items()})
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=catalog_schema())


def family_rows(family: Family, ids, vectors, model="model-a", errors=None) -> pa.Table:
    n = len(ids)
    dim = family.value.type.list_size
    return pa.table({
        KEY: ids,
        family.name: pa.array([None if v is None else list(map(float, v)) for v in vectors], vector_type(dim)),
        family.model_column: [model] * n,
        family.time_column: pa.array([NOW] * n, TIMESTAMP),
        family.error_column: errors or [None] * n,
        f"{family.name}_source": ["{title}"] * n,
    })


def random_vectors(n, dim, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def column(store: ItemStore, name: str, where=None) -> dict:
    table = store.scan([KEY, name], where)
    return dict(zip(table[KEY].to_pylist(), table[name].to_pylist(), strict=True))


def assert_unique(store: ItemStore) -> list[str]:
    ids = store.scan([KEY])[KEY].to_pylist()
    assert len(ids) == len(set(ids)), "duplicate item_id rows in the store"
    return ids


@pytest.fixture
def store(tmp_path) -> ItemStore:
    return make_store(tmp_path)


# ---- schema ------------------------------------------------------------------------------------------------
def test_catalog_schema_contract():
    schema = catalog_schema()
    assert schema.names == ["item_id", "media_uri", "media_type", "title", "metadata", "ingest_source",
                            "ingested_at", "ingest_error"]
    assert schema.field(KEY).type == pa.string() and not schema.field(KEY).nullable
    assert schema.field("ingested_at").type == pa.timestamp("us", tz="UTC")
    assert all(f.type == pa.string() for f in CATALOG_FIELDS if f.name != "ingested_at")


def test_vector_family_columns():
    family = vector_family("clip_vec", 512)
    assert family.name == "clip_vec"
    assert (family.model_column, family.time_column, family.error_column) == (
        "clip_vec_model", "clip_vec_at", "clip_vec_error")
    assert family.schema().names == [KEY, "clip_vec", "clip_vec_model", "clip_vec_at", "clip_vec_error",
                                     "clip_vec_source"]
    value = family.schema().field("clip_vec")
    assert value.type == pa.list_(pa.float32(), 512) and is_vector_field(value)
    assert not is_vector_field(pa.field("x", pa.list_(pa.float64(), 4)))
    assert not is_vector_field(pa.field("x", pa.list_(pa.float32())))


def test_family_rows_stamp_provenance_and_repeat_scalar_extras():
    family = description_family("desc")
    rows = family.rows(["a", "b"], ["x", None], "m1", [None, "boom"], prompt_id=["p", None], params="greedy",
                       prompt_tokens=np.array([3, 0]), tokens=np.array([5, 0]))
    assert rows.schema == family.schema()
    assert rows.column("desc_model").to_pylist() == ["m1", "m1"]
    assert rows.column("desc_params").to_pylist() == ["greedy", "greedy"]
    assert rows.column("desc_error").to_pylist() == [None, "boom"]
    assert rows.column("desc_tokens").to_pylist() == [5, 0]
    assert rows.column("desc_at").null_count == 0
    with pytest.raises(TypeError, match="no columns for"):
        family.rows(["a"], ["x"], "m1", [None], sorce="typo")


def test_error_values_keeps_only_strings():
    out = error_values(["boom", None, float("nan"), 3, ""])
    assert out.dtype == object and out.tolist() == ["boom", None, None, None, ""]


# ---- lifecycle --------------------------------------------------------------------------------------------
def test_create_if_missing(tmp_path):
    store = ItemStore(StoreConfig(uri=str(tmp_path / "store")))
    assert not store.exists()
    with pytest.raises(StoreError, match="run `seerec ingest` first"):
        _ = store.table
    store.create_if_missing()
    assert store.exists() and store.count() == 0
    store.upsert(catalog_rows(["a"]))
    store.create_if_missing()  # a second call must not replace the table
    assert store.count() == 1
    assert ItemStore(StoreConfig(uri=str(tmp_path / "store"))).count() == 1


def test_reading_a_missing_store_creates_nothing(tmp_path):
    missing = tmp_path / "no-store"
    store = ItemStore(StoreConfig(uri=str(missing)))
    assert not store.exists()
    for read in (lambda: store.count(), lambda: store.scan([KEY]), store.versions, lambda: store.get(["a"])):
        with pytest.raises(StoreError, match=rf"no item store at {missing}; run `seerec ingest` first"):
            read()
    assert not missing.exists()
    store.create_if_missing()  # writing creates it
    assert missing.is_dir() and store.count() == 0


def test_read_only_commands_on_a_missing_store_exit_2_and_create_nothing(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from jobs.cli import app

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    wrong = tmp_path / "wrong"
    for args in (["store", "info", f"store.uri={wrong}"], ["store", "versions", f"store.uri={wrong}"],
                 ["search", "--item", "a"]):  # no config: the default ./seerec-store
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "no item store at" in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_store_uri_that_is_a_file(tmp_path):
    path = tmp_path / "a-file"
    path.write_text("not a store")
    store = ItemStore(StoreConfig(uri=str(path)))
    assert not store.exists()
    with pytest.raises(StoreError, match="is a file; an item store is a folder"):
        store.create_if_missing()
    assert path.read_text() == "not a store"


def test_new_table_has_catalog_schema(store):
    schema = store.schema
    assert schema.names == catalog_schema().names
    for field in catalog_schema():
        assert schema.field(field.name).type == field.type
    assert not schema.field(KEY).nullable


def test_custom_table_name(tmp_path):
    store = make_store(tmp_path, table="things")
    assert "things" in store.db.list_tables().tables


# ---- upsert ------------------------------------------------------------------------------------------------
def test_upsert_insert_then_update(store):
    assert store.upsert(catalog_rows(["a", "b", "c"])) == UpsertResult(inserted=3, updated=0, attempts=1)
    result = store.upsert(catalog_rows(["b", "c", "d"], title=["B", "C", "D"]))
    assert (result.inserted, result.updated) == (1, 2)
    assert store.count() == 4
    assert sorted(assert_unique(store)) == ["a", "b", "c", "d"]
    assert column(store, "title") == {"a": "title a", "b": "B", "c": "C", "d": "D"}


def test_upsert_of_some_columns_leaves_the_others(store):
    store.upsert(catalog_rows(["a", "b"], media_type=["video", "image"]))
    result = store.upsert(pa.table({KEY: ["b"], "title": ["only the title"]}))
    assert (result.inserted, result.updated) == (0, 1)
    row = store.get(["b"], ["title", "media_type", "media_uri", "ingest_source"]).to_pylist()[0]
    assert row == {"title": "only the title", "media_type": "image", "media_uri": "/media/b", "ingest_source": "test"}
    assert column(store, "title")["a"] == "title a"


def test_reingest_keeps_stage_columns(store):
    family = vector_family("vec", 4)
    store.upsert(catalog_rows(["a", "b"]))
    store.write_family(family, family_rows(family, ["a"], [[1, 2, 3, 4]]))
    store.upsert(catalog_rows(["a", "b"], title=["new a", "new b"]))
    assert column(store, "vec") == {"a": [1.0, 2.0, 3.0, 4.0], "b": None}
    assert column(store, "title") == {"a": "new a", "b": "new b"}


def test_upsert_of_nothing_is_a_no_op(store):
    before = store.table.version
    assert store.upsert(catalog_rows([])) == UpsertResult()
    assert store.table.version == before


def test_upsert_rejects_repeated_item_id(store):
    with pytest.raises(StoreError, match="repeat an item_id"):
        store.upsert(catalog_rows(["a", "b", "a"]))
    assert store.count() == 0


def test_upsert_rejects_null_item_id(store):
    with pytest.raises(StoreError, match="null item_id"):
        store.upsert(pa.table({KEY: pa.array(["a", None]), "title": ["x", "y"]}))
    assert store.count() == 0


def test_upsert_accepts_nullable_key_field_without_nulls(store):
    rows = pa.table({KEY: pa.array(["a", "b"]), "title": ["x", "y"]})
    assert rows.schema.field(KEY).nullable
    assert store.upsert(rows).inserted == 2


def test_upsert_result_adds_up():
    total = UpsertResult()
    total += UpsertResult(1, 2, 1)
    total += UpsertResult(3, 0, 2)
    assert total == UpsertResult(4, 2, 3)


# ---- write_family ------------------------------------------------------------------------------------------
def test_write_family_adds_columns_and_only_updates_existing_items(store):
    store.upsert(catalog_rows(["a", "b", "c"]))
    family = vector_family("vec", 4)
    result = store.write_family(family, family_rows(family, ["a", "b", "ghost"], [[1, 0, 0, 0]] * 3))
    assert (result.inserted, result.updated) == (0, 2)
    schema = store.schema
    for field in family.fields():
        assert schema.field(field.name).type == field.type
    assert schema.field("vec").type == pa.list_(pa.float32(), 4)
    assert str(schema.field("vec").type) == "fixed_size_list<item: float>[4]"
    assert sorted(assert_unique(store)) == ["a", "b", "c"]  # the unknown item was not inserted
    assert column(store, "vec") == {"a": [1.0, 0.0, 0.0, 0.0], "b": [1.0, 0.0, 0.0, 0.0], "c": None}
    assert column(store, "vec_model") == {"a": "model-a", "b": "model-a", "c": None}
    assert column(store, "title") == {"a": "title a", "b": "title b", "c": "title c"}  # catalog untouched


def test_staged_flushes_are_merged_once_and_their_staging_table_dropped(store):
    store.upsert(catalog_rows(["a", "b", "c", "d"]))
    family = vector_family("vec", 4)
    for ids in (["a", "b"], ["c", "ghost"]):
        store.stage_family(family, family_rows(family, ids, [[1, 2, 3, 4]] * 2), "a" * 32)
    assert "vec" not in store.schema.names  # reads see staged rows only after the merge
    assert store.staging_tables("vec") == ["items__stage__vec__" + "a" * 32]
    result = store.commit_staged(family)
    assert result.updated == 3
    assert column(store, "vec") == {"a": [1, 2, 3, 4], "b": [1, 2, 3, 4], "c": [1, 2, 3, 4], "d": None}
    assert sorted(assert_unique(store)) == ["a", "b", "c", "d"]
    assert store.staging_tables("vec") == [] and store.db.list_tables().tables == ["items"]
    assert store.commit_staged(family) == UpsertResult()  # nothing staged: nothing written


def test_a_new_family_lands_on_its_own_items_across_fragments_deletions_and_any_row_order(store):
    ids = [f"i{n:02d}" for n in range(30)]
    for part in (ids[:10], ids[10:20], ids[20:]):  # one fragment per ingest
        store.upsert(catalog_rows(part))
    store.table.delete("item_id = 'i05'")
    assert len(store.table.to_lance().get_fragments()) == 3
    family = vector_family("vec", 4)
    staged = [i for i in ids if i not in ("i05", "i17")]  # i17 is never done; i05 is gone
    order = np.random.default_rng(0).permutation(len(staged))
    vectors = {i: [float(n), 1.0, 2.0, 3.0] for n, i in enumerate(ids)}
    vectors["i23"] = None  # a failed item
    rows = family_rows(family, [staged[k] for k in order] + ["ghost"], [vectors[staged[k]] for k in order] + [[9] * 4],
                       errors=[("boom" if staged[k] == "i23" else None) for k in order] + [None])
    for job, part in (("a" * 32, rows.slice(0, 15)), ("b" * 32, rows.slice(15))):
        store.stage_family(family, part, job)
    assert store.commit_staged(family).updated == len(staged)
    expected = {i: vectors[i] for i in staged} | {"i17": None}
    assert column(store, "vec") == expected
    assert column(store, "vec_error") == {i: ("boom" if i == "i23" else None) for i in expected}
    assert sorted(assert_unique(store)) == sorted(expected)  # the ghost was dropped, not inserted


def test_leftover_staging_tables_are_adopted_and_the_latest_row_wins(tmp_path):
    store = make_store(tmp_path)
    store.upsert(catalog_rows(["a", "b", "c"]))
    family = vector_family("vec", 4)
    store.write_family(family, family_rows(family, ["c"], [[0, 0, 0, 1]], model="old"))  # a refill: merge_insert
    killed = ItemStore(store.cfg)  # a job that flushed and died
    killed.stage_family(family, family_rows(family, ["a", "b"], [[1, 1, 1, 1]] * 2, model="killed"), "b" * 32)
    later = family_rows(family, ["b", "c"], [[2, 2, 2, 2]] * 2, model="rerun")
    later = later.set_column(3, family.time_column, pa.array([datetime(2025, 1, 1, tzinfo=UTC)] * 2, TIMESTAMP))
    store.stage_family(family, later, "c" * 32)
    store.stage_family(vector_family("other", 4), family_rows(vector_family("other", 4), ["a"], [[3] * 4]), "d" * 32)
    assert store.staging_tables("vec") == ["items__stage__vec__" + "b" * 32, "items__stage__vec__" + "c" * 32]
    store.commit_staged(family)
    assert column(store, "vec_model") == {"a": "killed", "b": "rerun", "c": "rerun"}
    assert sorted(assert_unique(store)) == ["a", "b", "c"]
    assert store.staging_tables("vec") == [] and len(store.staging_tables("other")) == 1  # other families wait


def test_a_large_update_is_merged_in_parts(store, monkeypatch):
    ids = [f"i{i:02d}" for i in range(30)]
    store.upsert(catalog_rows(ids))
    family = vector_family("vec", 4)
    store.write_family(family, family_rows(family, ids, [[0, 0, 0, 0]] * 30))
    monkeypatch.setattr(store_module, "_MERGE_BYTES", 200)  # a few rows per merge_insert
    before = store.table.version
    result = store.write_family(family, family_rows(family, ids, [[1, 1, 1, 1]] * 30, model="b"))
    assert result.updated == 30 and store.table.version - before > 3
    assert set(column(store, "vec_model").values()) == {"b"} and len(assert_unique(store)) == 30


def test_staging_checks_the_width_at_the_first_flush(store):
    store.upsert(catalog_rows(["a"]))
    store.write_family(vector_family("vec", 4), family_rows(vector_family("vec", 4), ["a"], [[1, 2, 3, 4]]))
    wide = vector_family("vec", 8)
    with pytest.raises(StoreError, match="holds fixed_size_list"):
        store.stage_family(wide, family_rows(wide, ["a"], [[1] * 8]), "e" * 32)


def test_write_family_selects_and_casts_its_columns(store):
    store.upsert(catalog_rows(["a"]))
    family = vector_family("vec", 2)
    rows = pa.table({
        "extra": [1],
        KEY: ["a"],
        "vec": pa.array([[0.5, 0.25]], pa.list_(pa.float64(), 2)),  # float64 is cast to float32
        "vec_model": ["m"],
        "vec_at": pa.array([NOW], TIMESTAMP),
        "vec_error": pa.array([None], pa.string()),
        "vec_source": ["s"],
    })
    store.write_family(family, rows)
    assert "extra" not in store.schema.names
    assert column(store, "vec") == {"a": [0.5, 0.25]}


def test_two_families_side_by_side(store):
    store.upsert(catalog_rows(["a", "b"]))
    text, image = vector_family("text_vec", 3), vector_family("clip_vec", 5)
    store.write_family(text, family_rows(text, ["a", "b"], [[1, 2, 3], [3, 2, 1]]))
    store.write_family(image, family_rows(image, ["b"], [[1, 1, 1, 1, 1]]))
    assert column(store, "text_vec") == {"a": [1.0, 2.0, 3.0], "b": [3.0, 2.0, 1.0]}
    assert column(store, "clip_vec") == {"a": None, "b": [1.0] * 5}


def test_writing_other_width_to_same_column_fails_clearly(store):
    store.upsert(catalog_rows(["a"]))
    narrow, wide = vector_family("vec", 4), vector_family("vec", 8)
    store.write_family(narrow, family_rows(narrow, ["a"], [[1, 2, 3, 4]]))
    version = store.table.version
    with pytest.raises(StoreError) as info:
        store.write_family(wide, family_rows(wide, ["a"], [[1] * 8]))
    message = str(info.value)
    assert "'vec'" in message and "[4]" in message and "[8]" in message
    assert "another column" in message
    assert store.table.version == version
    assert column(store, "vec") == {"a": [1.0, 2.0, 3.0, 4.0]}


def test_failed_rows_store_null_vectors(store):
    store.upsert(catalog_rows(["ok", "bad"]))
    family = vector_family("vec", 3)
    store.write_family(family, family_rows(family, ["ok", "bad"], [[1, 2, 3], None], errors=[None, "decode failed"]))
    table = store.scan([KEY, "vec", "vec_error", "vec_model"]).to_pylist()
    rows = {r[KEY]: r for r in table}
    assert rows["bad"]["vec"] is None and rows["bad"]["vec_error"] == "decode failed"
    assert rows["bad"]["vec_model"] == "model-a"
    assert rows["ok"]["vec"] == [1.0, 2.0, 3.0] and rows["ok"]["vec_error"] is None
    assert store.count("vec IS NULL") == 1


# ---- pending ------------------------------------------------------------------------------------------------
def test_pending_before_the_family_exists_is_everything(store):
    store.upsert(catalog_rows(["a", "b"]))
    pending = store.pending(vector_family("vec", 3), "model-a", ["title"])
    assert pending.column_names == [KEY, "title"]
    assert sorted(pending[KEY].to_pylist()) == ["a", "b"]


def test_pending_skips_done_rows_and_keeps_failed_ones(store):
    store.upsert(catalog_rows(["done", "failed", "never", "other"]))
    family = vector_family("vec", 3)
    store.write_family(family, family_rows(family, ["done", "failed"], [[1, 2, 3], None],
                                           errors=[None, "boom"]))
    store.write_family(family, family_rows(family, ["other"], [[3, 2, 1]], model="model-b"))

    def pending(model, **kw):
        return sorted(store.pending(family, model, ["title"], **kw)[KEY].to_pylist())

    assert pending("model-a") == ["failed", "never", "other"]
    assert pending("model-b") == ["done", "failed", "never"]
    assert pending("model-c") == ["done", "failed", "never", "other"]
    assert pending("model-a", force=True) == ["done", "failed", "never", "other"]
    assert pending("model-a", where="`title` != 'title never'") == ["failed", "other"]


def test_pending_counts_other_ids_of_the_model_and_its_skips_as_done(store):
    store.upsert(catalog_rows(["old-spelling", "skipped", "never"]))
    family = vector_family("vec", 3, skippable=True)
    rows = family.rows(pa.array(["old-spelling", "skipped"]), pa.array([[1.0, 2.0, 3.0], None], vector_type(3)),
                       "model-a", [None, None], source="{title}", skipped=[None, "no text to embed"])
    store.write_family(family, rows)

    def pending(model, **kw):
        return sorted(store.pending(family, model, [], **kw)[KEY].to_pylist())

    assert pending("model-a") == ["never"]  # the skipped item is done: nothing to retry
    assert pending("model-a", force=True) == ["never", "old-spelling", "skipped"]
    assert pending("model-a2") == ["never", "old-spelling", "skipped"]
    assert pending("model-a2", also_done_by=["model-a"]) == ["never"]  # another recorded id of the same model


def test_pending_model_id_is_quoted(store):
    store.upsert(catalog_rows(["a"]))
    family = vector_family("vec", 3)
    store.write_family(family, family_rows(family, ["a"], [[1, 2, 3]], model="it's"))
    assert store.pending(family, "it's", []).num_rows == 0
    assert store.pending(family, "x' OR '1'='1", []).num_rows == 1


def test_require_columns_names_missing_column(store):
    with pytest.raises(StoreError, match="no column 'nope'"):
        store.scan(["item_id", "nope"])


def test_get(store):
    store.upsert(catalog_rows(["a", "b", "it's"]))
    assert store.get([]).num_rows == 0
    assert sorted(store.get(["a", "it's", "zz"], [KEY])[KEY].to_pylist()) == ["a", "it's"]


# ---- search --------------------------------------------------------------------------------------------------
@pytest.fixture
def searchable(store) -> ItemStore:
    ids = ["a", "b", "c", "d", "e"]
    store.upsert(catalog_rows(ids, media_type=["video", "video", "image", "video", "image"]))
    family = vector_family("vec", 3)
    vectors = [[1, 0, 0], [0.9, 0.1, 0], [0.8, 0.2, 0], [0, 1, 0], None]
    store.write_family(family, family_rows(family, ids, vectors, errors=[None] * 4 + ["failed"]))
    return store


def test_search_vector_orders_by_distance(searchable):
    hits = searchable.search_vector("vec", np.array([1, 0, 0], np.float32), k=10)
    assert hits[KEY].to_pylist() == ["a", "b", "c", "d"]  # e has no vector
    distances = hits["_distance"].to_pylist()
    assert distances == sorted(distances) and distances[0] == pytest.approx(0, abs=1e-6)
    assert "vec" not in hits.column_names and "title" in hits.column_names


def test_search_vector_k_columns_conditions_exclude(searchable):
    query = np.array([1, 0, 0], np.float32)
    assert searchable.search_vector("vec", query, k=2)[KEY].to_pylist() == ["a", "b"]
    hits = searchable.search_vector("vec", query, columns=[KEY, "title"])
    assert hits.column_names == [KEY, "title", "_distance"]
    assert searchable.search_vector("vec", query, conditions=["media_type = image"])[KEY].to_pylist() == ["c"]
    assert searchable.search_vector("vec", query, exclude=["a", "c"])[KEY].to_pylist() == ["b", "d"]
    hits = searchable.search_vector("vec", query, conditions=["media_type = video"], exclude=["a"])
    assert hits[KEY].to_pylist() == ["b", "d"]
    hits = searchable.search_vector("vec", query, conditions=["media_type = x' OR '1'='1"])
    assert hits.num_rows == 0
    for k in (0, -3):
        with pytest.raises(StoreError, match=f"at least 1 item, not k={k}"):
            searchable.search_vector("vec", query, k=k)


def test_search_vector_errors(searchable):
    with pytest.raises(StoreError, match="query vector has 4 dimensions but 'vec' has 3"):
        searchable.search_vector("vec", np.zeros(4, np.float32))
    with pytest.raises(StoreError, match="not a vector column"):
        searchable.search_vector("title", np.zeros(3, np.float32))
    with pytest.raises(StoreError, match="no column 'nope'"):
        searchable.search_vector("nope", np.zeros(3, np.float32))
    with pytest.raises(FilterError, match="unknown column"):
        searchable.search_vector("vec", np.zeros(3, np.float32), conditions=["nope = 1"])


def test_neighbours_exclude_the_item_itself(searchable):
    hits = searchable.neighbours("a", "vec", k=2)
    assert hits[KEY].to_pylist() == ["b", "c"]
    hits = searchable.neighbours("a", "vec", conditions=["media_type = video"])
    assert hits[KEY].to_pylist() == ["b", "d"]


def test_neighbours_errors(searchable):
    with pytest.raises(StoreError, match="no item 'zz'"):
        searchable.neighbours("zz", "vec")
    with pytest.raises(StoreError, match="item 'e' has no vec"):
        searchable.neighbours("e", "vec")
    with pytest.raises(StoreError, match="no column"):
        searchable.neighbours("a", "other_vec")


def test_model_ids(searchable):
    family = vector_family("vec", 3)
    searchable.write_family(family, family_rows(family, ["d"], [[0, 0, 1]], model="model-b"))
    searchable.write_family(family, family_rows(family, ["c"], [None], model="model-failed", errors=["x"]))
    assert searchable.model_ids("vec") == ["model-a", "model-b"]  # a model with only failed rows is left out
    with pytest.raises(StoreError, match="no column 'other_model'"):
        searchable.model_ids("other")


# ---- finalize and indexes -------------------------------------------------------------------------------------
def _indices(store: ItemStore) -> dict[str, str]:
    return {tuple(i.columns)[0]: i.index_type for i in store.table.list_indices()}


def test_finalize_small_table_indexes_only_item_id(store):
    store.upsert(catalog_rows(["a", "b"]))
    family = vector_family("vec", 3)
    store.write_family(family, family_rows(family, ["a", "b"], [[1, 2, 3], [3, 2, 1]]))
    store.finalize(["vec"])
    assert _indices(store) == {KEY: "BTree"}
    assert store.ensure_vector_index("vec") is False
    store.finalize(["vec"])  # a second run must not fail on the existing index
    assert _indices(store) == {KEY: "BTree"}
    assert store.search_vector("vec", np.array([1, 2, 3], np.float32), k=1)[KEY].to_pylist() == ["a"]


@pytest.mark.parametrize(("index_type", "expected"), [("ivf_hnsw_sq", "IvfHnswSq"), ("ivf_pq", "IvfPq")])
def test_finalize_builds_vector_index_only_above_threshold(tmp_path, index_type, expected):
    store = make_store(tmp_path, index_min_rows=256, index_type=index_type)
    ids = [f"item{i:04d}" for i in range(600)]
    store.upsert(catalog_rows(ids))
    big, small = vector_family("big", 16), vector_family("small", 16)
    vectors = random_vectors(600, 16)
    store.write_family(big, family_rows(big, ids, vectors))
    store.write_family(small, family_rows(small, ids[:100], vectors[:100]))
    store.finalize(["big", "small"])
    assert _indices(store) == {KEY: "BTree", "big": expected}
    hits = store.search_vector("big", vectors[7], k=5)
    assert hits.num_rows == 5 and "item0007" in hits[KEY].to_pylist()
    assert store.neighbours("item0007", "big", k=3).num_rows == 3
    store.finalize(["big", "small"])
    assert _indices(store) == {KEY: "BTree", "big": expected}


def test_ensure_vector_index_checks_column(store):
    with pytest.raises(StoreError, match="not a vector column"):
        store.ensure_vector_index("title")


# ---- versions and restore --------------------------------------------------------------------------------------
def test_versions_and_restore(store):
    store.upsert(catalog_rows(["a", "b"]))
    old = store.table.version
    store.upsert(catalog_rows(["a", "c"], title=["changed", "new"]))
    assert column(store, "title") == {"a": "changed", "b": "title b", "c": "new"}
    versions = store.versions()
    assert [v["version"] for v in versions] == sorted(v["version"] for v in versions)
    assert versions[-1]["version"] == store.table.version
    assert int(versions[-1]["rows"]) == 3
    assert all(isinstance(v["timestamp"], datetime) for v in versions)
    latest = store.table.version

    store.restore(old)
    assert store.table.version == latest + 1  # a new commit, history kept
    assert column(store, "title") == {"a": "title a", "b": "title b"}
    assert ItemStore(store.cfg).count() == 2  # visible to other handles
    assert {v["version"] for v in store.versions()} >= {old, latest, latest + 1}
    store.upsert(catalog_rows(["d"]))  # the restored table is writable
    assert store.count() == 3


def test_tag_version_labels_the_version_a_stage_ended_at(store):
    store.upsert(catalog_rows(["a", "b"]))
    ingested = store.table.version
    first = store.tag_version("ingest", "manifest", seconds=1.25)
    family = vector_family("text_vec", 3)
    store.write_family(family, family_rows(family, ["a"], [[1, 2, 3]]))
    second = store.tag_version("embed", "/models/MiniLM L6:v2", column="text_vec")
    again = store.tag_version("embed", "/models/MiniLM L6:v2", column="text_vec")  # likely the same second

    assert first.startswith("ingest-") and first.endswith("Z")
    assert second.startswith("embed-text_vec-") and again.startswith("embed-text_vec-") and again != second
    by_version = {v["version"]: v["tags"] for v in store.versions()}
    assert by_version[ingested] == first
    assert set(by_version[store.table.version].split(", ")) == {second, again}
    assert all(by_version[v] == "" for v in by_version if v not in (ingested, store.table.version))
    tags = {t["tag"]: t for t in ItemStore(store.cfg).tags()}
    assert tags[first] | {"finished_at": None} == {"tag": first, "version": ingested, "stage": "ingest",
                                                   "model": "manifest", "seconds": "1.2", "finished_at": None}
    assert datetime.fromisoformat(tags[first]["finished_at"]).tzinfo is not None
    assert (tags[second]["stage"], tags[second]["model"], tags[second]["column"]) == (
        "embed", "/models/MiniLM L6:v2", "text_vec")
    store.restore(ingested)  # tags outlive a restore, so the tagged version can still be found
    assert {t["tag"] for t in store.tags()} == {first, second, again}
    assert "text_vec" not in store.schema.names


def test_ingest_tags_its_version(tmp_path):
    from jobs.ingest import run_ingest
    from pipeline.config import validate_config

    manifest = tmp_path / "items.csv"
    manifest.write_text("item_id,media_uri,media_type,title\na,,text,first\nb,,text,second\n")
    cfg = validate_config({"store": {"uri": str(tmp_path / "store")},
                           "ingest": {"source": "manifest", "path": str(manifest)}})
    run_ingest(cfg)
    store = ItemStore(cfg.store)
    (tag,) = store.tags()
    assert (tag["stage"], tag["model"], tag["version"]) == ("ingest", "manifest:items.csv", store.table.version)
    assert store.versions()[-1]["tags"] == tag["tag"]


def test_restore_unknown_version(store):
    store.upsert(catalog_rows(["a"]))
    with pytest.raises(StoreError, match=r"no version 999; it has 1\.\.2"):
        store.restore(999)
    assert store.count() == 1


# ---- commit conflicts ---------------------------------------------------------------------------------------------
@pytest.fixture
def no_sleep(monkeypatch) -> list[float]:
    delays: list[float] = []
    monkeypatch.setattr(store_module.time, "sleep", delays.append)
    return delays


def test_retry_retries_conflicts_then_succeeds(store, no_sleep):
    calls = []

    def operation():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("Retryable commit conflict for version 7: another writer committed first")
        if len(calls) == 2:  # Lance's own retries ran out on a slow object store
            raise RuntimeError("lance error: Too many concurrent writers. Attempted 2 times, but failed on "
                               "retry_timeout of 30.000 seconds.")
        return "ok"

    assert store._retry(operation, "test op") == ("ok", 3)
    assert len(calls) == 3 and len(no_sleep) == 2
    assert all(0 < d <= 7.5 for d in no_sleep)


def test_retry_propagates_other_errors_immediately(store, no_sleep):
    calls = []

    def operation():
        calls.append(1)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        store._retry(operation, "test op")
    assert len(calls) == 1 and no_sleep == []


def test_retry_gives_up_after_commit_retries(tmp_path, no_sleep):
    store = make_store(tmp_path, commit_retries=2)
    calls = []

    def operation():
        calls.append(1)
        raise OSError("Commit conflict for version 3")

    with pytest.raises(OSError, match="conflict"):
        store._retry(operation, "test op")
    assert len(calls) == 3 and len(no_sleep) == 2


def test_retry_with_zero_retries_tries_once(tmp_path, no_sleep):
    store = make_store(tmp_path, commit_retries=0)
    with pytest.raises(RuntimeError):
        store._retry(lambda: (_ for _ in ()).throw(RuntimeError("commit conflict")), "test op")
    assert no_sleep == []


def _run_together(*jobs):
    """Start the jobs at the same moment in threads; return the exceptions they raised."""
    barrier = threading.Barrier(len(jobs))
    errors: list[BaseException] = []

    def run(job):
        try:
            barrier.wait()
            job()
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors


def test_concurrent_family_writes_and_upserts_lose_nothing(tmp_path):
    cfg = StoreConfig(uri=str(tmp_path / "store"))
    base = ItemStore(cfg)
    base.create_if_missing()
    ids = [f"i{i:03d}" for i in range(120)]
    base.upsert(catalog_rows(ids))
    families = [vector_family(name, 4) for name in ("va", "vb", "vc")]

    def write(family):  # a column merge of the new family, then staged flushes merged by one merge_insert
        handle = ItemStore(cfg)
        handle.write_family(family, family_rows(family, ids[:40], random_vectors(40, 4)))
        for start in range(40, len(ids), 40):
            chunk = ids[start:start + 40]
            handle.stage_family(family, family_rows(family, chunk, random_vectors(len(chunk), 4)), "f" * 32)
        handle.commit_staged(family)

    def insert(part):
        ItemStore(cfg).upsert(catalog_rows([f"new{part}-{i}" for i in range(30)]))

    errors = _run_together(*[lambda f=f: write(f) for f in families], *[lambda p=p: insert(p) for p in range(2)])
    assert errors == []
    assert len(assert_unique(base)) == 180
    for family in families:
        values = column(base, family.name)
        assert all(values[i] is not None for i in ids), f"{family.name} lost a write"
        assert base.count(f"{family.name} IS NOT NULL") == 120


def test_concurrent_upserts_of_same_new_ids_do_not_duplicate(tmp_path):
    cfg = StoreConfig(uri=str(tmp_path / "store"))
    base = ItemStore(cfg)
    base.create_if_missing()
    base.upsert(catalog_rows(["seed"]))
    handles = [ItemStore(cfg) for _ in range(3)]
    expected = {"seed"}

    for prefix in ("i", "j"):  # once with a plain scan join, once after finalize built the item_id index
        ids = [f"{prefix}{i:03d}" for i in range(50)]
        expected.update(ids)
        errors = _run_together(*[lambda h=h, n=n, ids=ids: h.upsert(catalog_rows(ids, title=[f"w{n}"] * 50))
                                 for n, h in enumerate(handles)])
        assert errors == []
        assert set(assert_unique(base)) == expected, f"round {prefix}"
        titles = base.scan(["title"], f"`item_id` LIKE '{prefix}%'")["title"]
        assert len(pc.unique(titles)) == 1  # every row comes from one writer's batch, not a mix
        base.finalize()


def test_writer_flushes_by_time_as_well_as_rows(tmp_path):
    """With rows far below write_batch_rows, the interval alone makes the results durable."""
    import time

    from pipeline.runtime import FamilyWriter

    store = make_store(tmp_path, write_batch_rows=1000, flush_interval_s=0.2)
    store.upsert(catalog_rows(["a", "b", "c"]))
    family = vector_family("vec", 4)
    writer = FamilyWriter(store, family, total=3, stage="test", progress=False)
    def staged() -> int:  # flushed rows are committed to the job's staging table until the stage ends
        return sum(store.db.open_table(name).count_rows() for name in store.staging_tables("vec"))

    writer.add(family_rows(family, ["a"], random_vectors(1, 4)))
    assert staged() == 0 and "vec" not in store.schema.names  # buffered, nothing written yet
    time.sleep(0.3)
    writer.add(family_rows(family, ["b"], random_vectors(1, 4)))
    assert staged() == 2  # the interval passed: both rows are committed before close
    writer.add(family_rows(family, ["c"], random_vectors(1, 4)))
    assert staged() == 2
    writer.close()
    assert store.count("vec IS NOT NULL") == 3 and staged() == 0


@pytest.mark.parametrize("path", ["new family (column merge)", "existing family (merge_insert)", "staged flush"])
def test_a_nan_vector_is_stored_null_with_an_error_on_every_write_path(store, path):
    store.upsert(catalog_rows(["ok", "nan", "inf", "failed"]))
    family = vector_family("vec", 3)
    if path == "existing family (merge_insert)":
        store.write_family(family, family_rows(family, ["ok"], [[0, 0, 1]]))
    rows = family_rows(family, ["ok", "nan", "inf", "failed"], [[1, 2, 3], [1, np.nan, 3], [np.inf, 0, 0], None],
                       errors=[None, None, None, "decode failed"])
    if path == "staged flush":
        store.stage_family(family, rows, "e" * 32)
        store.commit_staged(family)
    else:
        store.write_family(family, rows)
    got = {r[KEY]: r for r in store.scan([KEY, "vec", "vec_error"]).to_pylist()}
    assert got["ok"]["vec"] == [1.0, 2.0, 3.0] and got["ok"]["vec_error"] is None
    for item in ("nan", "inf"):
        assert got[item]["vec"] is None and got[item]["vec_error"] == BAD_VECTOR
    assert got["failed"]["vec"] is None and got["failed"]["vec_error"] == "decode failed"  # its own error is kept
