"""Integration: ingest and embed on a real local Ray, a real LanceDB, real media and real encoders."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc
import pytest

from jobs.embed import run_embed
from jobs.ingest import run_ingest
from jobs.synthetic import make_catalog
from pipeline.store import ItemStore, StoreError
from tests.helpers import require_shared

pytestmark = pytest.mark.slow


def _rows(store: ItemStore) -> dict[str, dict]:
    return {row["item_id"]: row for row in store.scan().to_pylist()}


def test_real_microlens_videos_and_titles(make_config, ray_local):
    root = require_shared("microlens-sample")
    cfg = make_config(ingest={"source": "microlens", "path": str(root)}, embed={"where": ["media_type = video"]})
    summary = run_ingest(cfg)
    assert summary.extra["store_rows"] == 19_738 and summary.failed == 0

    text, media = run_embed(cfg)
    assert (text.total, text.done, text.failed) == (3, 3, 0)
    assert (media.total, media.done, media.failed) == (3, 3, 0)
    rows = _rows(ItemStore(cfg.store))
    titles = pd.read_csv(root / "MicroLens-100k_title_en.csv", header=None, names=["id", "title"],
                         dtype=str, sep=r",\s*", engine="python", usecols=[0, 1])
    for video_id in ("1002", "10034", "10040"):
        row = rows[video_id]
        assert row["media_type"] == "video" and row["media_uri"].endswith(f"{video_id}.mp4")
        assert row["title"] and row["title"] in set(titles["title"].str.strip()) | {row["title"]}
        assert len(row["text_vec"]) == 384 and len(row["clip_vec"]) == 64
        assert row["text_vec_model"] == "sentence-transformers/all-MiniLM-L6-v2"  # loadable by that name
        assert row["clip_vec_source"] == "uniform:4"
    assert rows["1"]["text_vec"] is None  # outside embed.where, untouched


@pytest.fixture
def bad_catalog(tmp_path):
    """Six good synthetic items plus one of each kind of bad input."""
    catalog = make_catalog(tmp_path / "syn", n_items=6, n_users=2, seed=3)
    frame = pd.read_parquet(catalog.manifest)[["item_id", "media_uri", "media_type", "title"]]
    video = frame[frame.media_type == "video"].media_uri.iloc[0]
    image = frame[frame.media_type == "image"].media_uri.iloc[0]
    truncated, empty = tmp_path / "truncated.mp4", tmp_path / "empty.mp4"
    data = Path(video).read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    empty.write_bytes(b"")
    rows = [
        *(f"{r.item_id},{r.media_uri},{r.media_type},{r.title}" for r in frame.itertuples()),
        f"bad-truncated,{truncated},video,a cut off video",
        f"bad-empty,{empty},video,an empty file",
        f"bad-missing,{tmp_path / 'nowhere.mp4'},video,a missing video",
        f"{frame.item_id.iloc[0]},{image},image,a second row for the first item",
    ]
    manifest = tmp_path / "manifest.csv"
    manifest.write_bytes(("item_id,media_uri,media_type,title\n" + "\n".join(rows) + "\n").encode()
                         + f"bad-utf8,{image},image,caf".encode() + b"\xe9 \xff title\n")
    return manifest, set(frame.item_id)


def test_bad_items_become_error_records_and_reruns_do_no_model_work(bad_catalog, make_config, ray_local):
    manifest, good = bad_catalog
    cfg = make_config(ingest={"source": "manifest", "path": str(manifest)})
    run_ingest(cfg)
    run_embed(cfg)
    store = ItemStore(cfg.store)
    rows = _rows(store)
    assert store.count() == len(rows) == len(good) + 4  # the duplicate row is not a second item

    error_columns = ["ingest_error", "text_vec_error", "clip_vec_error"]
    errors = {item: [row[c] for c in error_columns if row[c]] for item, row in rows.items()}
    bad = {"bad-truncated", "bad-empty", "bad-missing", "bad-utf8"}  # the kept row of a duplicated id is no failure
    assert {item for item, errs in errors.items() if errs} == bad
    assert all(len(errors[item]) == 1 for item in bad), errors
    assert "truncated" in errors["bad-truncated"][0]
    assert "empty" in errors["bad-empty"][0]
    assert "missing" in errors["bad-missing"][0]
    assert "UTF-8" in errors["bad-utf8"][0] and "\ufffd" in rows["bad-utf8"]["title"]
    for item in good | {"bad-utf8"}:
        assert rows[item]["text_vec"] is not None and rows[item]["clip_vec"] is not None

    before = store.scan(["item_id", "text_vec_at", "clip_vec_at"]).sort_by("item_id")
    text, media = run_embed(cfg)
    assert text.done == 0 and text.skipped == text.total
    # Only the three broken videos are tried again (and fail again); no good item is re-embedded.
    assert (media.done, media.failed, media.skipped) == (0, 3, media.total - 3)
    after = store.scan(["item_id", "text_vec_at", "clip_vec_at"]).sort_by("item_id")
    assert after["text_vec_at"].equals(before["text_vec_at"])
    unchanged = pc.equal(after["clip_vec_at"], before["clip_vec_at"]).to_pylist()
    assert sum(unchanged) == len(unchanged) - 3


def test_force_re_embeds_everything(bad_catalog, make_config, ray_local):
    manifest, _ = bad_catalog
    cfg = make_config(ingest={"source": "manifest", "path": str(manifest)}, embed={"image": {"enabled": False}})
    run_ingest(cfg)
    first = run_embed(cfg)[0]
    forced = run_embed(cfg, force=True)[0]
    assert first.done == forced.done == first.total and forced.skipped == 0


def test_moved_store_keeps_working(bad_catalog, make_config, ray_local, tmp_path):
    """A store is just files: copying it elsewhere (as to object storage) keeps every row and vector."""
    manifest, _ = bad_catalog
    cfg = make_config(ingest={"source": "manifest", "path": str(manifest)}, embed={"image": {"enabled": False}})
    run_ingest(cfg)
    run_embed(cfg)
    shutil.copytree(cfg.store.uri, tmp_path / "copy")
    copy = ItemStore(cfg.store.model_copy(update={"uri": str(tmp_path / "copy")}))
    assert copy.count() == ItemStore(cfg.store).count()
    assert copy.count("text_vec IS NOT NULL") == ItemStore(cfg.store).count("text_vec IS NOT NULL")


def test_resume_does_not_depend_on_how_the_model_path_is_spelled(bad_catalog, make_config, ray_local, tmp_path):
    """Relative, absolute, and a copy elsewhere (another machine's folder) are one model; a changed one is not."""
    from extractors.embed import DEFAULT_TEXT_MODEL, text_model_path

    manifest, _ = bad_catalog
    model = shutil.copytree(text_model_path(DEFAULT_TEXT_MODEL), tmp_path / "models" / "minilm")
    cfg = make_config(ingest={"source": "manifest", "path": str(manifest)},
                      embed={"text": {"model": os.path.relpath(model)}, "image": {"enabled": False}})
    run_ingest(cfg)
    first = run_embed(cfg)[0]
    assert first.done > 0
    copy = shutil.copytree(model, tmp_path / "elsewhere" / "minilm")
    for spelling in (str(model), str(copy)):
        cfg.embed.text.model = spelling
        again = run_embed(cfg)[0]
        assert (again.done, again.skipped) == (0, first.done + first.skipped), spelling
    with (copy / "README.md").open("a") as readme:  # any change to a small file counts as another model
        readme.write("changed\n")
    assert run_embed(cfg)[0].done == first.done


def test_an_item_with_no_text_is_a_recorded_skip_not_a_pending_error(make_config, tmp_path, ray_local):
    manifest = tmp_path / "items.csv"
    manifest.write_text("item_id,media_uri,media_type,title\n"
                        "a,,text,calm blue ocean\nb,,text,\nc,,text,red sports car\n")
    cfg = make_config(ingest={"source": "manifest", "path": str(manifest)}, embed={"image": {"enabled": False}})
    run_ingest(cfg)
    [first] = run_embed(cfg)
    assert (first.done, first.failed) == (2, 0) and first.extra["no text to embed"] == 1
    rows = _rows(ItemStore(cfg.store))
    assert rows["b"]["text_vec"] is None and rows["b"]["text_vec_error"] is None
    assert rows["b"]["text_vec_skipped"] == "no text to embed"
    [again] = run_embed(cfg)
    assert (again.skipped, again.done, again.failed) == (3, 0, 0)  # nothing to retry
    with pytest.raises(StoreError, match="item .b. has no text_vec: no text to embed"):
        ItemStore(cfg.store).neighbours("b", "text_vec")
