"""Tests for pipeline.catalogs: manifests in three formats, per-row errors, and the real data readers."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline.catalogs import (
    Catalog,
    CatalogError,
    read_amazon_scientific,
    read_catalog,
    read_manifest,
    read_microlens,
    read_s3rec,
)
from pipeline.schema import catalog_schema

HEADER = "item_id,media_uri,media_type,title"


def rows_by_id(catalog: Catalog) -> dict[str, dict]:
    return {row["item_id"]: row for row in catalog.rows.to_pylist()}


def write_csv(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def check_catalog_table(catalog: Catalog) -> None:
    assert catalog.rows.schema.equals(catalog_schema())
    ids = catalog.rows["item_id"].to_pylist()
    assert len(ids) == len(set(ids))
    assert catalog.rows["ingested_at"].null_count == 0
    assert pc.all(pc.equal(catalog.rows["ingest_source"], catalog.source)).as_py()


# ---- manifests -------------------------------------------------------------------------------------------
def test_csv_manifest(tmp_path):
    path = write_csv(tmp_path / "items.csv", f"{HEADER},color,views",
                     "v1,videos/a.mp4,video,A video,red,10",
                     "i1,/abs/b.jpg,IMAGE,An image,blue,",
                     "t1,,text,Just text,,",
                     "r1,s3://bucket/c.mp4,video,Remote,green,3")
    catalog = read_catalog("manifest", path, roots=[str(tmp_path), "/abs", "s3://bucket/"])
    check_catalog_table(catalog)
    assert catalog.source == "manifest:items.csv"
    assert catalog.rejected == [] and catalog.duplicates == {} and catalog.errors == 0
    rows = rows_by_id(catalog)
    assert rows["v1"]["media_uri"] == str((tmp_path / "videos" / "a.mp4").resolve())
    assert rows["v1"]["media_type"] == "video" and rows["v1"]["title"] == "A video"
    assert json.loads(rows["v1"]["metadata"]) == {"color": "red", "views": "10"}
    assert rows["i1"]["media_uri"] == "/abs/b.jpg" and rows["i1"]["media_type"] == "image"
    assert rows["t1"]["media_uri"] is None and rows["t1"]["media_type"] == "text"
    assert rows["r1"]["media_uri"] == "s3://bucket/c.mp4"
    for key in ("media_uri", "media_type", "title", "item_id"):
        assert key not in json.loads(rows["v1"]["metadata"])


def test_relative_uri_resolves_against_manifest_folder_not_cwd(tmp_path, monkeypatch):
    folder = tmp_path / "catalog"
    folder.mkdir()
    path = write_csv(folder / "m.csv", HEADER, "a,../media/x.jpg,image,X")
    monkeypatch.chdir(tmp_path)
    row = rows_by_id(read_manifest(Path("catalog/m.csv"), roots=[str(tmp_path)]))["a"]
    assert row["media_uri"] == str((tmp_path / "media" / "x.jpg").resolve())
    assert path.exists()


def test_jsonl_manifest(tmp_path):
    lines = [
        {"item_id": "a", "media_uri": "a.jpg", "media_type": "image", "title": "A", "metadata": {"k": 1},
         "tags": ["x", "y"]},
        {"item_id": 7, "media_uri": "b.mp4", "media_type": "video"},
        {"item_id": "c", "media_uri": None, "media_type": "text", "title": "C", "metadata": '{"from": "text"}'},
    ]
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    catalog = read_catalog("manifest", path)
    check_catalog_table(catalog)
    rows = rows_by_id(catalog)
    assert set(rows) == {"a", "7", "c"}  # a numeric id becomes text
    assert rows["a"]["media_uri"] == str((tmp_path / "a.jpg").resolve())
    assert json.loads(rows["a"]["metadata"]) == {"k": 1, "tags": ["x", "y"]}
    assert json.loads(rows["c"]["metadata"]) == {"from": "text"}
    assert rows["7"]["title"] is None and rows["7"]["metadata"] is None
    assert catalog.rejected == [] and catalog.errors == 0


def test_parquet_manifest(tmp_path):
    frame = pd.DataFrame({
        "item_id": ["p1", "p2"],
        "media_uri": ["sub/a.jpg", "b.mp4"],
        "media_type": ["image", "video"],
        "title": ["x", None],
        "score": [1.5, float("nan")],
    })
    path = tmp_path / "items.parquet"
    frame.to_parquet(path)
    catalog = read_catalog("manifest", path)
    check_catalog_table(catalog)
    rows = rows_by_id(catalog)
    assert rows["p1"]["media_uri"] == str((tmp_path / "sub" / "a.jpg").resolve())
    assert json.loads(rows["p1"]["metadata"]) == {"score": 1.5}
    assert json.loads(rows["p2"]["metadata"]) == {"score": None}  # NaN becomes null, not invalid JSON
    assert rows["p2"]["title"] is None
    assert catalog.source == "manifest:items.parquet"


def test_limit(tmp_path):
    path = write_csv(tmp_path / "m.csv", HEADER, *(f"i{i},,text,T{i}" for i in range(10)))
    assert read_catalog("manifest", path, limit=3).rows["item_id"].to_pylist() == ["i0", "i1", "i2"]


def test_duplicate_item_id_keeps_first_row_and_rejects_the_others(tmp_path):
    path = write_csv(tmp_path / "m.csv", HEADER, "a,,text,First", "b,,text,B", "a,,text,Second", "a,,text,Third")
    catalog = read_manifest(path)
    assert catalog.rows.num_rows == 2
    assert catalog.duplicates == {"a": 3}
    rows = rows_by_id(catalog)
    assert rows["a"]["title"] == "First"
    assert rows["a"]["ingest_error"] is None and rows["b"]["ingest_error"] is None  # the kept row did not fail
    assert catalog.errors == 0
    assert catalog.rejected == ["m.csv row 4: item_id 'a' repeats row 2, which was kept",
                                "m.csv row 5: item_id 'a' repeats row 2, which was kept"]


def test_kept_duplicate_keeps_its_own_error(tmp_path):
    path = write_csv(tmp_path / "m.csv", HEADER, "a,,podcast,First", "a,,text,Second")
    catalog = read_manifest(path)
    assert rows_by_id(catalog)["a"]["ingest_error"].startswith("unknown media_type 'podcast'")
    assert catalog.errors == 1 and len(catalog.rejected) == 1


def test_csv_title_with_invalid_utf8(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes(f"{HEADER}\n".encode() + b"a,,text,Bad \xff\xfe title\nb,,text,Good \xc3\xa9\n")
    catalog = read_manifest(path)
    rows = rows_by_id(catalog)
    error = rows["a"]["ingest_error"]
    assert error is not None and error.count(";") == 0  # exactly one error
    assert "UTF-8" in error and "title" in error
    assert rows["a"]["title"] == "Bad \ufffd\ufffd title"
    assert rows["b"]["title"] == "Good é" and rows["b"]["ingest_error"] is None
    assert catalog.errors == 1
    pa.Table.from_pylist(catalog.rows.to_pylist(), schema=catalog_schema())  # valid Arrow strings


@pytest.mark.parametrize(("line", "column"), [
    (b"a,x\xff.jpg,image,T,red", "media_uri"),
    (b"a\xff,x.jpg,image,T,red", "item_id"),
    (b"a,x.jpg,image,T,r\xffd", "color"),
])
def test_invalid_utf8_in_other_columns_is_a_row_error(tmp_path, line, column):
    path = tmp_path / "m.csv"
    path.write_bytes(f"{HEADER},color\n".encode() + line + b"\nb,,text,fine,blue\n")
    catalog = read_manifest(path)
    assert catalog.rows.num_rows == 2
    bad = [row for row in catalog.rows.to_pylist() if row["ingest_error"]]
    assert len(bad) == 1
    assert bad[0]["ingest_error"] == f"{column} is not valid UTF-8 (undecodable bytes replaced with U+FFFD)"
    assert "\ufffd" in json.dumps(bad[0], default=str, ensure_ascii=False)


def test_csv_with_byte_order_mark(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes(b"\xef\xbb\xbf" + f"{HEADER}\na,,text,T\n".encode())
    assert rows_by_id(read_manifest(path))["a"]["ingest_error"] is None


def test_unknown_media_type_is_a_row_error(tmp_path):
    path = write_csv(tmp_path / "m.csv", HEADER, "a,x.wav,podcast,Sound", "b,,,Nothing", "c,,Text,Fine")
    rows = rows_by_id(read_manifest(path))
    assert rows["a"]["ingest_error"] == "unknown media_type 'podcast' (expected one of video, image, audio, text)"
    assert rows["a"]["media_type"] == "podcast"
    assert "unknown media_type" in rows["b"]["ingest_error"] and rows["b"]["media_type"] is None
    assert rows["c"]["media_type"] == "text" and rows["c"]["ingest_error"] is None


def test_media_item_without_uri_is_a_row_error(tmp_path):
    path = write_csv(tmp_path / "m.csv", HEADER, "a,,video,V", "b,  ,image,I")
    rows = rows_by_id(read_manifest(path))
    assert rows["a"]["ingest_error"] == "video item has no media_uri"
    assert rows["b"]["ingest_error"] == "image item has no media_uri" and rows["b"]["media_uri"] is None


def test_missing_item_id_is_rejected(tmp_path):
    path = write_csv(tmp_path / "m.csv", HEADER, "a,,text,A", ",,text,No id", "  ,,text,Blank id", "b,,text,B")
    catalog = read_manifest(path)
    assert sorted(rows_by_id(catalog)) == ["a", "b"]
    assert catalog.rejected == ["m.csv row 3: no item_id", "m.csv row 4: no item_id"]


def test_malformed_jsonl_lines_are_rejected(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"item_id": "a", "media_uri": null, "media_type": "text"}\n'
                    '{"item_id": "b", broken\n'
                    '[1, 2]\n'
                    '{"media_uri": null, "media_type": "text"}\n'
                    '{"item_id": "c", "media_uri": null, "media_type": "text"}\n')
    catalog = read_manifest(path)
    assert sorted(rows_by_id(catalog)) == ["a", "c"]
    assert len(catalog.rejected) == 3
    assert catalog.rejected[0].startswith("m.jsonl line 2: not valid JSON")
    assert catalog.rejected[1] == "m.jsonl line 3: not a JSON object"
    assert catalog.rejected[2] == "m.jsonl row 4: no item_id"


@pytest.mark.parametrize("header", ["item_id,media_uri,title", "item_id,media_type", "media_uri,media_type,title"])
def test_missing_required_column(tmp_path, header):
    path = write_csv(tmp_path / "m.csv", header, ",".join(["x"] * len(header.split(","))))
    with pytest.raises(CatalogError, match="has no '(item_id|media_uri|media_type)' column"):
        read_manifest(path)


def test_empty_manifest(tmp_path):
    with pytest.raises(CatalogError, match="has no rows"):
        read_manifest(write_csv(tmp_path / "m.csv", HEADER))


def test_unsupported_manifest_format(tmp_path):
    path = tmp_path / "m.txt"
    path.write_text("x")
    with pytest.raises(CatalogError, match=r"must be \.parquet, \.csv or \.jsonl"):
        read_catalog("manifest", path)


@pytest.mark.parametrize("source", ["manifest", "microlens", "s3rec", "amazon-beauty", "amazon-scientific",
                                    "recbole"])
def test_missing_path(tmp_path, source):
    with pytest.raises(CatalogError, match="does not exist"):
        read_catalog(source, tmp_path / "nope")


def test_microlens_folder_without_titles(tmp_path):
    with pytest.raises(CatalogError, match=r"no file matching \*title\*\.csv"):
        read_catalog("microlens", tmp_path)


def test_microlens_layout_falls_back_to_cover_then_text(tmp_path):
    (tmp_path / "videos").mkdir()
    (tmp_path / "covers").mkdir()
    (tmp_path / "videos" / "1.mp4").write_bytes(b"")
    (tmp_path / "covers" / "2.jpg").write_bytes(b"")
    (tmp_path / "covers" / "1.jpg").write_bytes(b"")
    (tmp_path / "MicroLens_title_en.csv").write_bytes(
        b"video_id,title\n1,first, with comma\n2,second\n3,third \xff\n1,again\n")
    catalog = read_catalog("microlens", tmp_path)
    rows = rows_by_id(catalog)
    assert rows["1"]["media_type"] == "video" and rows["1"]["media_uri"] == str(tmp_path / "videos" / "1.mp4")
    assert rows["1"]["title"] == "first, with comma"
    assert rows["2"]["media_type"] == "image" and rows["2"]["media_uri"] == str(tmp_path / "covers" / "2.jpg")
    assert rows["3"]["media_type"] == "text" and rows["3"]["media_uri"] is None
    assert "UTF-8" in rows["3"]["ingest_error"]
    assert catalog.duplicates == {"1": 2}
    assert read_catalog("microlens", tmp_path, limit=2).rows.num_rows == 2


def test_catalog_error_is_a_value_error():
    assert issubclass(CatalogError, ValueError)


# ---- real data ---------------------------------------------------------------------------------------------
def _dataset(shared_data: Path, name: str) -> Path:
    path = shared_data / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent: this test needs the real data in ../shared/data")
    return path


def test_amazon_beauty(shared_data):
    catalog = read_s3rec(_dataset(shared_data, "amazon-beauty"))
    check_catalog_table(catalog)
    assert catalog.rows.num_rows == 12_101
    assert catalog.source == "s3rec:Beauty"
    assert catalog.errors == 0 and catalog.duplicates == {} and catalog.rejected == []
    first = catalog.rows.slice(0, 1).to_pylist()[0]
    assert first["item_id"] == "1"
    assert first["title"] == "OPI, Makeup, Nails, Nail Polish"
    assert json.loads(first["metadata"]) == {"asin": "B004756YJA"}
    assert first["media_type"] == "text" and first["media_uri"] is None
    assert pc.all(pc.equal(catalog.rows["media_type"], "text")).as_py()
    assert read_catalog("amazon-beauty", shared_data / "amazon-beauty", limit=5).rows.num_rows == 5
    assert read_catalog("s3rec", shared_data / "amazon-beauty", limit=5).rows.num_rows == 5


def test_amazon_scientific(shared_data):
    catalog = read_amazon_scientific(_dataset(shared_data, "amazon-scientific"))
    check_catalog_table(catalog)
    assert catalog.rows.num_rows == 4_344
    assert catalog.rows["title"].null_count == 0
    assert pc.min(pc.utf8_length(catalog.rows["title"])).as_py() > 0
    assert catalog.errors == 0
    metadata = json.loads(catalog.rows["metadata"][0].as_py())
    assert "title" not in metadata and {"brand", "categories"} <= set(metadata)


def test_microlens_sample(shared_data):
    root = _dataset(shared_data, "microlens-sample")
    catalog = read_microlens(root)
    check_catalog_table(catalog)
    assert catalog.rows.num_rows == 19_738
    assert catalog.errors == 0 and catalog.duplicates == {}
    rows = catalog.rows.to_pylist()
    videos = [r for r in rows if r["media_type"] == "video"]
    assert sorted(r["item_id"] for r in videos) == ["1002", "10034", "10040"]
    for row in videos:
        assert Path(row["media_uri"]).is_file()
        assert row["media_uri"] == str((root / "videos" / f"{row['item_id']}.mp4").resolve())
    others = [r for r in rows if r["media_type"] != "video"]
    assert len(others) == 19_735
    assert all(r["media_type"] == "text" and r["media_uri"] is None for r in others)


# ---- media roots ----------------------------------------------------------------------------------------
HOSTILE_URIS = ["/etc/shadow", "../../../../etc/shadow", "file:///etc/hostname",
                "http://169.254.169.254/latest/meta-data/iam", "s3://bucket/videos/a.mp4", "escape/a.jpg"]


def test_media_outside_the_catalog_folder_is_refused_per_row(tmp_path):
    folder = tmp_path / "catalog"
    (folder / "media").mkdir(parents=True)
    (folder / "media" / "ok.jpg").write_bytes(b"x")
    (folder / "escape").symlink_to("/etc")  # a symlink out of the folder is resolved, then refused
    path = write_csv(folder / "m.csv", HEADER, "ok,media/ok.jpg,image,fine", "abs,/etc/../etc/x.jpg,image,x",
                     *(f"bad{i},{uri},image,hostile" for i, uri in enumerate(HOSTILE_URIS)))
    catalog = read_catalog("manifest", path)
    rows = rows_by_id(catalog)
    assert rows["ok"]["ingest_error"] is None and rows["ok"]["media_uri"] == str(folder / "media" / "ok.jpg")
    assert catalog.errors == len(HOSTILE_URIS) + 1 and catalog.rejected == []
    for item_id, row in rows.items():
        if item_id != "ok":
            assert row["media_uri"] is None, row  # no later stage is handed the refused uri
            assert "media.roots" in row["ingest_error"], row
    assert "outside the media roots" in rows["bad0"]["ingest_error"] and str(folder) in rows["bad0"]["ingest_error"]
    assert "/etc/shadow" in rows["bad1"]["ingest_error"]
    assert "remote http:// URI" in rows["bad3"]["ingest_error"]


def test_configured_roots_allow_local_folders_and_remote_prefixes(tmp_path):
    media = tmp_path / "elsewhere"
    media.mkdir()
    path = write_csv(tmp_path / "m.csv", HEADER, f"a,{media}/a.mp4,video,A", "b,s3://bucket/videos/b.mp4,video,B",
                     "c,s3://bucket/videos-private/c.mp4,video,C", "d,s3://bucket/videos/../secret/d.mp4,video,D",
                     "e,http://good.example@evil.example/e.mp4,video,E", f"f,{tmp_path}/m.csv,image,F")
    rows = rows_by_id(read_catalog("manifest", path, roots=[str(media), "s3://bucket/videos",
                                                            "http://good.example/"]))
    assert rows["a"]["ingest_error"] is None and rows["b"]["ingest_error"] is None
    assert rows["b"]["media_uri"] == "s3://bucket/videos/b.mp4"
    assert "outside the media roots" in rows["c"]["ingest_error"]
    assert "'..' segment" in rows["d"]["ingest_error"]
    assert "outside the media roots" in rows["e"]["ingest_error"]
    assert "outside the media roots" in rows["f"]["ingest_error"]  # configured roots replace the default


def test_microlens_media_stays_inside_its_folder(tmp_path):
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "1.mp4").symlink_to("/etc/hostname")
    (tmp_path / "t_title.csv").write_text("1,linked out\n")
    row = rows_by_id(read_catalog("microlens", tmp_path))["1"]
    assert row["media_uri"] is None and "outside the media roots" in row["ingest_error"]


# ---- paths that are not what the source needs -------------------------------------------------------------
def test_folder_given_as_manifest_path(tmp_path):
    with pytest.raises(CatalogError, match="is a folder; give the manifest file"):
        read_catalog("manifest", tmp_path)


def test_device_given_as_manifest_path():
    with pytest.raises(CatalogError, match="/dev/zero is not a regular file"):
        read_catalog("manifest", "/dev/zero")


def test_a_parquet_manifest_that_is_not_parquet_is_one_sentence(tmp_path):
    path = write_csv(tmp_path / "m.parquet", HEADER)
    with pytest.raises(CatalogError, match=r"^manifest m.parquet is not a readable Parquet file \("):
        read_catalog("manifest", path)


def test_a_file_uri_names_a_local_manifest(tmp_path):
    path = write_csv(tmp_path / "m.csv", HEADER, "a,,text,t")
    assert read_catalog("manifest", path.as_uri()).rows["item_id"].to_pylist() == ["a"]


@pytest.mark.parametrize("source", ["microlens", "s3rec", "amazon-scientific"])
def test_file_given_as_dataset_folder(tmp_path, source):
    path = write_csv(tmp_path / "m.csv", HEADER)
    with pytest.raises(CatalogError, match="must be the dataset folder"):
        read_catalog(source, path)


# ---- S3-Rec layout, any category ----------------------------------------------------------------------
def write_s3rec(folder: Path, category: str, attributes: dict[str, list[int]], counts: dict[str, int]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    names = {a: f"attr{a}" for a in counts}
    maps = {"id2item": {i: f"ASIN{i}" for i in attributes}, "id2attribute": names, "attributeid2num": counts}
    (folder / "datamaps.json").write_text(json.dumps(maps))
    (folder / f"{category}_item2attributes.json").write_text(json.dumps(attributes))
    return folder


def test_s3rec_category_with_another_threshold(tmp_path):
    # Attributes 2 and 4 are each seen twice, 1 and 3 once: a threshold of 2 keeps 2 and 4, numbered 1 and 2.
    root = write_s3rec(tmp_path / "toys", "Toys_and_Games", {"1": [1, 2], "2": [1], "3": [2], "4": []},
                       {"1": 1, "2": 2, "3": 1, "4": 2})
    catalog = read_catalog("s3rec", root)
    assert catalog.source == "s3rec:Toys_and_Games"
    rows = rows_by_id(catalog)
    assert [rows[i]["title"] for i in "1234"] == ["attr2, attr4", "attr2", "attr4", ""]
    assert json.loads(rows["3"]["metadata"]) == {"asin": "ASIN3"}


@pytest.mark.parametrize(("attributes", "problem"), [
    ({"1": [1, 2], "2": [2], "3": [2], "4": []}, "attribute 1 is on 1 items"),  # counts do not match
    ({"1": [1, 2, 3], "2": [], "3": [], "4": []}, "no count threshold keeps that many"),
    ({"1": [0], "2": [], "3": [], "4": []}, "no count threshold keeps that many"),
    ({"1": ["a"], "2": [], "3": [], "4": []}, "must map each item id to a list of attribute numbers"),
])
def test_s3rec_numbering_that_does_not_match_datamaps_is_one_sentence(tmp_path, attributes, problem):
    root = write_s3rec(tmp_path / "c", "Sports_and_Outdoors", attributes, {"1": 1, "2": 2, "3": 1, "4": 2})
    with pytest.raises(CatalogError, match=problem) as info:
        read_catalog("s3rec", root)
    assert "\n" not in str(info.value) and "Sports_and_Outdoors_item2attributes.json" in str(info.value)


def test_s3rec_folder_needs_exactly_one_category_and_its_datamaps(tmp_path):
    root = write_s3rec(tmp_path / "two", "Beauty", {"1": []}, {"1": 1})
    (root / "Toys_item2attributes.json").write_text("{}")
    with pytest.raises(CatalogError, match="has Beauty_item2attributes.json, Toys_item2attributes.json"):
        read_catalog("s3rec", root)
    (root / "Toys_item2attributes.json").unlink()
    (root / "datamaps.json").unlink()
    with pytest.raises(CatalogError, match="datamaps.json is missing"):
        read_catalog("s3rec", root)
    (root / "datamaps.json").write_text("{not json")
    with pytest.raises(CatalogError, match="is not valid JSON"):
        read_catalog("s3rec", root)
    (root / "datamaps.json").write_text('{"id2item": {}}')
    with pytest.raises(CatalogError, match="has no 'id2attribute' map"):
        read_catalog("s3rec", root)


def test_real_s3rec_files_under_another_category_name(shared_data, tmp_path):
    beauty = _dataset(shared_data, "amazon-beauty")
    (tmp_path / "datamaps.json").symlink_to(beauty / "datamaps.json")
    (tmp_path / "Sports_item2attributes.json").symlink_to(beauty / "Beauty_item2attributes.json")
    catalog = read_catalog("s3rec", tmp_path, limit=3)
    assert catalog.source == "s3rec:Sports"
    assert catalog.rows["title"][0].as_py() == "OPI, Makeup, Nails, Nail Polish"


def test_real_s3rec_attributes_numbered_another_way_are_refused(shared_data, tmp_path):
    beauty = _dataset(shared_data, "amazon-beauty")
    (tmp_path / "datamaps.json").symlink_to(beauty / "datamaps.json")
    attributes = json.loads((beauty / "Beauty_item2attributes.json").read_text())
    top = max(j for ids in attributes.values() for j in ids)
    shifted = {item: [top + 1 - j for j in ids] for item, ids in attributes.items()}  # numbered in reverse
    (tmp_path / "Beauty_item2attributes.json").write_text(json.dumps(shifted))
    with pytest.raises(CatalogError, match="does not number the attributes of datamaps.json as S3-Rec does"):
        read_catalog("s3rec", tmp_path)


# ---- RecBole atomic files ---------------------------------------------------------------------------------
ITEM_FILE = ("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
             "1\tToy Story\t1995\tAnimation Children's Comedy\n"
             "2\tGoldenEye\t1995\tAction Adventure Thriller\n"
             "3\tbroken row\n"
             "2\tGoldenEye again\t1995\tAction\n")
INTER_FILE = ("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
              "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t242\t1\t878887116\n")


def test_recbole_item_file(tmp_path):
    (tmp_path / "ml.item").write_text(ITEM_FILE)
    (tmp_path / "ml.inter").write_text(INTER_FILE)
    for path in (tmp_path, tmp_path / "ml.item"):  # the folder reads its .item file
        catalog = read_catalog("recbole", path)
        check_catalog_table(catalog)
        assert catalog.source == "recbole:ml.item"
        rows = rows_by_id(catalog)
        assert set(rows) == {"1", "2"} and rows["1"]["title"] == "Toy Story" and rows["1"]["media_type"] == "text"
        assert json.loads(rows["1"]["metadata"]) == {"release_year": "1995", "class": "Animation Children's Comedy"}
        assert catalog.errors == 0
        assert catalog.rejected == ["ml.item row 4: the header names 4 fields, it has 2",
                                    "ml.item row 5: item_id '2' repeats row 3, which was kept"]


def test_recbole_inter_file_gives_the_item_ids(tmp_path):
    (tmp_path / "ml.inter").write_text(INTER_FILE)
    catalog = read_catalog("recbole", tmp_path)
    assert catalog.rows["item_id"].to_pylist() == ["242", "302"]
    assert catalog.rejected == [] and catalog.duplicates == {} and catalog.errors == 0


def test_recbole_media_fields_are_read_and_confined(tmp_path):
    (tmp_path / "v.mp4").write_bytes(b"x")
    (tmp_path / "c.item").write_text("item_id:token\ttitle:token_seq\tmedia_uri:token\tmedia_type:token\n"
                                     "a\tA video\tv.mp4\tvideo\nb\tB\t/etc/passwd\timage\n")
    rows = rows_by_id(read_catalog("recbole", tmp_path / "c.item"))
    assert rows["a"]["media_uri"] == str(tmp_path / "v.mp4") and rows["a"]["ingest_error"] is None
    assert rows["b"]["media_uri"] is None and "outside the media roots" in rows["b"]["ingest_error"]


@pytest.mark.parametrize(("text", "problem"), [
    ("", "is empty"),
    ("item_id\ttitle:token_seq\n1\tx\n", "header field 'item_id' is not name:type"),
    ("item_id:int\n1\n", "header field 'item_id:int' is not name:type"),
    ("title:token_seq\nx\n", "has no item_id field"),
])
def test_recbole_bad_files_are_one_sentence(tmp_path, text, problem):
    (tmp_path / "x.item").write_text(text)
    with pytest.raises(CatalogError, match=problem):
        read_catalog("recbole", tmp_path / "x.item")
