"""Tests for pipeline.filters: parsing `column op value`, the SQL it writes, and injection attempts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from pipeline.config import StoreConfig
from pipeline.filters import Condition, FilterError, parse_condition, quote_text, to_sql
from pipeline.schema import CATALOG_FIELDS, catalog_schema, vector_type
from pipeline.store import ItemStore

SCHEMA = pa.schema([
    *CATALOG_FIELDS,
    pa.field("views", pa.int64()),
    pa.field("score", pa.float32()),
    pa.field("approved", pa.bool_()),
    pa.field("clip_vec", vector_type(4)),
    pa.field("tags", pa.list_(pa.string())),
])


def sql(text: str) -> str:
    return parse_condition(text).to_sql(SCHEMA)


# ---- parse_condition ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "column", "op", "value"), [
    ("title = cat", "title", "=", "cat"),
    ("title != cat", "title", "!=", "cat"),
    ("views < 3", "views", "<", "3"),
    ("views <= 3", "views", "<=", "3"),
    ("views > 3", "views", ">", "3"),
    ("views >= 3", "views", ">=", "3"),
    ("views>=3", "views", ">=", "3"),
    ("item_id in a,b , c", "item_id", "in", ["a", "b", "c"]),
    ("item_id IN a", "item_id", "in", ["a"]),
    ("title contains black cat", "title", "contains", "black cat"),
    ("title CONTAINS cat", "title", "contains", "cat"),
    ("ingest_error is null", "ingest_error", "is null", None),
    ("ingest_error IS  NULL", "ingest_error", "is null", None),
    ("ingest_error is not null", "ingest_error", "is not null", None),
    ("ingest_error IS NOT   NULL", "ingest_error", "is not null", None),
    ("  title   =   spaced out  ", "title", "=", "spaced out"),
    ("title = 'quoted value'", "title", "=", "quoted value"),
    ('title = "double quoted"', "title", "=", "double quoted"),
    ("title = 'unbalanced", "title", "=", "'unbalanced"),
    ("title = '", "title", "=", "'"),
])
def test_parse_condition_every_operator(text, column, op, value):
    assert parse_condition(text) == Condition(column, op, value)


@pytest.mark.parametrize("text", [
    "title", "", "   ", "= cat", "title ~ cat", "1title = x", "my col = 1", "`title` = 1",
    "ti`tle = 1", "title; = 1", "title like cat",
])
def test_parse_condition_rejects_unreadable(text):
    with pytest.raises(FilterError, match="cannot read filter"):
        parse_condition(text)


def test_doubled_equals_is_a_literal_value():
    assert sql("title == cat") == "`title` = '= cat'"


@pytest.mark.parametrize("text", ["title =", "title contains", "item_id in", "views >=   "])
def test_parse_condition_needs_a_value(text):
    with pytest.raises(FilterError, match="has no value"):
        parse_condition(text)


@pytest.mark.parametrize("text", ["ingest_error is null x", "ingest_error is not null 1"])
def test_nothing_may_follow_null_tests(text):
    with pytest.raises(FilterError, match="nothing may follow"):
        parse_condition(text)


# ---- to_sql --------------------------------------------------------------------------------------------
def test_to_sql_quotes_text_and_backticks_columns():
    assert sql("title = cat") == "`title` = 'cat'"
    assert sql("media_type != video") == "`media_type` != 'video'"


def test_to_sql_doubles_single_quotes():
    assert sql("title = it's") == "`title` = 'it''s'"
    assert quote_text("a'b''c") == "'a''b''''c'"


def test_contains_escapes_like_wildcards():
    assert sql("title contains 50%_off") == "`title` LIKE '%50\\%\\_off%' ESCAPE '\\'"
    assert sql("title contains a\\b") == "`title` LIKE '%a\\\\b%' ESCAPE '\\'"
    assert sql("title contains it's") == "`title` LIKE '%it''s%' ESCAPE '\\'"


def test_contains_needs_text_column():
    with pytest.raises(FilterError, match="needs a text column"):
        sql("views contains 3")


def test_in_lists():
    assert sql("item_id in a, b,c") == "`item_id` IN ('a', 'b', 'c')"
    assert sql("views in 1,2") == "`views` IN (1, 2)"
    assert Condition("item_id", "in", ("x'y", "z")).to_sql(SCHEMA) == "`item_id` IN ('x''y', 'z')"
    assert Condition("item_id", "in", "p,q").to_sql(SCHEMA) == "`item_id` IN ('p', 'q')"


@pytest.mark.parametrize("text", [
    "media_type in (video, image)", "media_type in [video, image]", "media_type IN ('video', 'image')",
    'media_type in ("video","image")', "media_type In [ video , image ]", "media_type in video,image",
])
def test_in_accepts_the_lists_users_write(text):
    assert sql(text) == "`media_type` IN ('video', 'image')"


def test_in_quoted_values_keep_commas_brackets_and_quotes():
    assert sql("title in ('a, b', '(c)', 'it''s', \"d'e\")") == "`title` IN ('a, b', '(c)', 'it''s', 'd''e')"


@pytest.mark.parametrize(("text", "problem"), [
    ("media_type in (video, image", "unbalanced brackets"),
    ("media_type in [video", "unbalanced brackets"),
    ("media_type in video, image)", "unbalanced brackets"),
    ("media_type in 'video' image", "cannot read the list"),
])
def test_in_refuses_lists_it_cannot_read_with_the_syntax(text, problem):
    with pytest.raises(FilterError, match=problem) as info:
        parse_condition(text)
    assert "column in (a, b, c)" in str(info.value)


def test_in_needs_a_value():
    with pytest.raises(FilterError, match="at least one value"):
        sql("item_id in ,")
    with pytest.raises(FilterError, match="at least one value"):
        sql("item_id in ()")
    with pytest.raises(FilterError, match="at least one value"):
        Condition("item_id", "in", []).to_sql(SCHEMA)


def test_in_values_are_validated_against_column_type():
    with pytest.raises(FilterError, match="does not fit column 'views'"):
        sql("views in 1,x")


def test_integers():
    assert sql("views >= 3") == "`views` >= 3"
    assert sql("views = -7") == "`views` = -7"
    for bad in ("3.5", "three", "1 OR 1=1", "3; DROP TABLE items"):
        with pytest.raises(FilterError, match="does not fit column 'views' of type int64"):
            sql(f"views = {bad}")


def test_floats():
    assert sql("score > 0.5") == "`score` > 0.5"
    assert sql("score > 1e3") == "`score` > 1000.0"
    assert sql("score < 2") == "`score` < 2.0"
    for bad in ("nan", "inf", "-inf", "abc", "0.5 OR 1=1"):
        with pytest.raises(FilterError, match="does not fit column 'score'"):
            sql(f"score > {bad}")


def test_booleans():
    assert sql("approved = true") == "`approved` = TRUE"
    assert sql("approved = False") == "`approved` = FALSE"
    for bad in ("yes", "1", "true OR 1=1"):
        with pytest.raises(FilterError, match="does not fit column 'approved'"):
            sql(f"approved = {bad}")


def test_timestamps():
    assert sql("ingested_at > 2024-01-01") == "`ingested_at` > timestamp '2024-01-01T00:00:00'"
    assert (sql("ingested_at <= 2024-01-01T10:30:00+02:00")
            == "`ingested_at` <= timestamp '2024-01-01T10:30:00+02:00'")
    for bad in ("yesterday", "2024-13-01", "2024-01-01' OR '1'='1"):
        with pytest.raises(FilterError, match="does not fit column 'ingested_at'"):
            sql(f"ingested_at > {bad}")


def test_null_tests():
    assert sql("ingest_error is null") == "`ingest_error` IS NULL"
    assert sql("views is not null") == "`views` IS NOT NULL"


def test_to_sql_ands_conditions_and_accepts_condition_objects():
    where = to_sql(["media_type = video", Condition("views", ">", 3)], SCHEMA)
    assert where == "(`media_type` = 'video') AND (`views` > 3)"
    assert to_sql([], SCHEMA) is None


def test_nul_characters_are_refused():
    with pytest.raises(FilterError, match="NUL"):
        sql("title = a\x00b")


# ---- injection attempts ----------------------------------------------------------------------------------
def test_quote_in_value_stays_inside_the_literal():
    assert sql("title = x' OR '1'='1") == "`title` = 'x'' OR ''1''=''1'"


def test_statement_separator_stays_inside_the_literal():
    assert sql("item_id = a; DROP TABLE items") == "`item_id` = 'a; DROP TABLE items'"


@pytest.mark.parametrize("column", ["my col", "ti`tle", "title`", "`title`", "title OR 1=1 --", "title)"])
def test_odd_column_names_are_refused(column):
    with pytest.raises(FilterError):
        to_sql([f"{column} = x"], SCHEMA)
    with pytest.raises(FilterError, match="unknown column"):
        Condition(column, "=", "x").to_sql(SCHEMA)


def test_unknown_column_lists_filterable_columns():
    with pytest.raises(FilterError, match="unknown column 'nope'") as info:
        sql("nope = 1")
    listed = str(info.value)
    assert "title" in listed and "views" in listed
    assert "clip_vec" not in listed and "tags" not in listed


@pytest.mark.parametrize("column", ["clip_vec", "tags"])
def test_non_scalar_columns_are_refused(column):
    with pytest.raises(FilterError, match="cannot be filtered on"):
        sql(f"{column} = 1")


@pytest.mark.parametrize("op", ["= 'a' OR 1=1 --", "LIKE", "==", "OR"])
def test_condition_built_in_code_with_unknown_operator_is_refused(op):
    with pytest.raises(FilterError, match="unknown filter operator"):
        Condition("title", op, "a").to_sql(SCHEMA)


def test_filter_error_is_a_value_error():
    assert issubclass(FilterError, ValueError)


# ---- against a real LanceDB table ----------------------------------------------------------------------
TITLES = {
    "a": "x' OR '1'='1",
    "b": "50%_off",
    "c": "50xyoff",
    "d": "it's here",
    "e": "back\\slash",
    "f": "plain",
    "g": "a; DROP TABLE items",
}
START = datetime(2024, 6, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = ItemStore(StoreConfig(uri=str(tmp_path_factory.mktemp("filters") / "store")))
    store.create_if_missing()
    rows = [{"item_id": item_id, "media_type": "text" if i % 2 else "video", "title": title,
             "ingested_at": START + timedelta(days=i), "ingest_error": "bad" if item_id == "f" else None}
            for i, (item_id, title) in enumerate(TITLES.items())]
    store.upsert(pa.Table.from_pylist(rows, schema=catalog_schema()))
    return store


def ids(store: ItemStore, *conditions: str) -> list[str]:
    return sorted(store.scan(["item_id"], to_sql(conditions, store.schema))["item_id"].to_pylist())


def test_injection_matches_nothing_while_honest_filter_matches(store):
    assert store.count() == len(TITLES)
    assert ids(store, "item_id = a") == ["a"]
    assert ids(store, "item_id = a' OR '1'='1") == []
    assert ids(store, "item_id = a; DROP TABLE items") == []
    assert ids(store, "title = x' OR '1'='1") == ["a"]  # only the row whose title is that very text
    assert ids(store, "title = a; DROP TABLE items") == ["g"]
    assert ids(store, "item_id in a,b' OR '1'='1") == ["a"]
    assert ids(store, "title contains ' OR '1'='1' --") == []
    assert store.count() == len(TITLES)  # nothing was dropped


def test_contains_wildcards_are_literal(store):
    assert ids(store, "title contains 50%_off") == ["b"]
    assert ids(store, "title contains %") == ["b"]
    assert ids(store, "title contains _") == ["b"]
    assert ids(store, "title contains 50") == ["b", "c"]
    assert ids(store, "title contains it's") == ["d"]
    assert ids(store, "title contains back\\slash") == ["e"]
    assert ids(store, "title contains \\") == ["e"]


def test_structured_filters_on_real_table(store):
    assert ids(store, "media_type = video") == ["a", "c", "e", "g"]
    assert ids(store, "media_type = video", "title contains 5") == ["c"]
    assert ids(store, "item_id in a,c,zz") == ["a", "c"]
    assert ids(store, "media_type in (video, text)") == sorted(TITLES)
    assert ids(store, "media_type in [video]") == ["a", "c", "e", "g"]
    assert ids(store, "item_id IN ('a', 'b')") == ["a", "b"]
    assert ids(store, "ingest_error is not null") == ["f"]
    assert len(ids(store, "ingest_error is null")) == len(TITLES) - 1
    assert ids(store, "ingested_at >= 2024-06-06") == ["f", "g"]
    assert ids(store, "ingested_at >= 2024-06-06T02:00:00+02:00") == ["f", "g"]
    assert ids(store, "ingested_at < 2024-06-02T00:00:00+00:00") == ["a"]


def test_unknown_column_refused_on_real_table(store):
    with pytest.raises(FilterError, match="unknown column 'zzz'"):
        to_sql(["item_id = a", "zzz = 1"], store.schema)
