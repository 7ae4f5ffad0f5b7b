"""`seerec ingest` end to end on a real store: what a summary counts, and media refused outside the roots."""

from __future__ import annotations

from pathlib import Path

from jobs.ingest import run_ingest
from pipeline.config import validate_config
from pipeline.store import ItemStore


def _config(tmp_path: Path, manifest: Path, **media):
    return validate_config({"store": {"uri": str(tmp_path / "store")}, "media": media,
                            "ingest": {"source": "manifest", "path": str(manifest)}})


def _manifest(tmp_path: Path, *rows: str) -> Path:
    folder = tmp_path / "catalog"
    folder.mkdir(exist_ok=True)
    path = folder / "items.csv"
    path.write_text("item_id,media_uri,media_type,title\n" + "\n".join(rows) + "\n")
    return path


def test_a_duplicated_id_counts_its_later_rows_as_failed_not_the_kept_one(tmp_path):
    manifest = _manifest(tmp_path, "a,,text,First", "b,,text,B", "a,,text,Again", "a,,text,Third")
    summary = run_ingest(_config(tmp_path, manifest))
    assert (summary.total, summary.done, summary.failed) == (4, 2, 2)
    assert summary.extra["duplicate_ids"] == 1 and summary.extra["rejected_rows"] == 2
    rows = {r["item_id"]: r for r in ItemStore(_config(tmp_path, manifest).store).scan().to_pylist()}
    assert set(rows) == {"a", "b"} and rows["a"]["title"] == "First" and rows["a"]["ingest_error"] is None


def test_hostile_media_uris_are_per_item_errors_and_never_stored(tmp_path):
    manifest = _manifest(tmp_path, "ok,,text,fine", "shadow,/etc/shadow,image,x", "up,../../../../etc/shadow,image,x",
                         "file,file:///etc/hostname,image,x", "meta,http://169.254.169.254/latest/meta-data/,image,x")
    cfg = _config(tmp_path, manifest)
    summary = run_ingest(cfg)
    assert (summary.total, summary.done, summary.failed) == (5, 1, 4)
    rows = ItemStore(cfg.store).scan(["item_id", "media_uri", "ingest_error"]).to_pylist()
    assert all(r["media_uri"] is None for r in rows)
    assert sum("media.roots" in (r["ingest_error"] or "") for r in rows) == 4


def test_configured_roots_admit_media_beside_the_catalog(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    (media / "a.jpg").write_bytes(b"x")
    manifest = _manifest(tmp_path, f"a,{media / 'a.jpg'},image,A")
    assert run_ingest(_config(tmp_path, manifest)).failed == 1  # the default root is the catalog folder only
    summary = run_ingest(_config(tmp_path, manifest, roots=[str(media)]))
    assert summary.failed == 0
    assert ItemStore(_config(tmp_path, manifest).store).get(["a"], ["media_uri"])["media_uri"][0].as_py() == str(
        media / "a.jpg")
