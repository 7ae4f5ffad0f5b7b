"""Catalog readers: each turns one source layout into catalog rows (the store's catalog columns).

Readers do not stop at a bad row. A row that can still be keyed becomes an item with an `ingest_error`;
a row that cannot (no item_id) is listed in `Catalog.rejected`. Duplicate ids keep their first row and
say so, so nothing disappears silently.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa

from pipeline.errors import SeerecError
from pipeline.schema import CATALOG_FIELDS, MEDIA_TYPES, catalog_schema

log = logging.getLogger(__name__)

REQUIRED_MANIFEST_COLUMNS = ("item_id", "media_uri", "media_type")
_CATALOG_COLUMNS = {f.name for f in CATALOG_FIELDS}


class CatalogError(SeerecError, ValueError):
    """The source as a whole cannot be read (missing file, missing required column)."""


@dataclass
class Catalog:
    rows: pa.Table
    source: str
    rejected: list[str] = field(default_factory=list)
    duplicates: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return self.rows.num_rows - self.rows["ingest_error"].null_count


def read_catalog(source: str, path: str | Path, limit: int | None = None) -> Catalog:
    readers = {
        "manifest": read_manifest,
        "microlens": read_microlens,
        "amazon-beauty": read_amazon_beauty,
        "amazon-scientific": read_amazon_scientific,
    }
    path = Path(path)
    if not path.exists():
        raise CatalogError(f"catalog path {path} does not exist")
    return readers[source](path, limit)


# ---- generic manifest --------------------------------------------------------------------------------
def read_manifest(path: Path, limit: int | None = None) -> Catalog:
    """Parquet, CSV or JSONL with item_id, media_uri, media_type and optional title/metadata columns."""
    records, rejected = _manifest_records(path)
    missing = [c for c in REQUIRED_MANIFEST_COLUMNS if records and c not in records[0][1]]
    if not records:
        raise CatalogError(f"manifest {path} has no rows")
    if missing:
        raise CatalogError(f"manifest {path} has no {missing[0]!r} column (required: "
                           f"{', '.join(REQUIRED_MANIFEST_COLUMNS)})")
    items = []
    for line, record in records[:limit] if limit else records:
        if not str(record.get("item_id") or "").strip():
            rejected.append(f"{path.name} row {line}: no item_id")
            continue
        items.append((line, _manifest_item(record, path.parent)))
    return _finish(items, f"manifest:{path.name}", rejected)


def _manifest_records(path: Path) -> tuple[list[tuple[int, dict]], list[str]]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        frame = pd.read_parquet(path)
        return [(i + 1, _clean(r)) for i, r in enumerate(frame.to_dict("records"))], []
    # utf-8-sig drops the byte-order mark that spreadsheet exports put before the first header.
    text = path.read_bytes().decode("utf-8-sig", errors="surrogateescape")
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        return [(i + 2, _clean(r)) for i, r in enumerate(reader)], []
    if suffix in (".jsonl", ".ndjson"):
        records, rejected = [], []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                rejected.append(f"{path.name} line {number}: not valid JSON ({exc.msg})")
                continue
            if isinstance(value, dict):
                records.append((number, _clean(value)))
            else:
                rejected.append(f"{path.name} line {number}: not a JSON object")
        return records, rejected
    raise CatalogError(f"manifest {path} must be .parquet, .csv or .jsonl")


def _clean(record: dict) -> dict:
    return {k: (None if v is None or (isinstance(v, float) and v != v) else v) for k, v in record.items()}


def _manifest_item(record: dict, base: Path) -> dict:
    errors = []
    # Undecodable bytes in any column (not only the title) would make Arrow reject the whole catalog.
    repaired = {}
    for key, value in record.items():
        fixed_key, fixed = _repair_utf8(key), _repair_utf8(value)
        if fixed_key != key or fixed != value:
            errors.append(f"{fixed_key} is not valid UTF-8 (undecodable bytes replaced with U+FFFD)")
        repaired[fixed_key] = fixed
    record = repaired
    title = record.get("title")
    media_type = str(record.get("media_type") or "").strip().lower()
    if media_type not in MEDIA_TYPES:
        errors.append(f"unknown media_type {record.get('media_type')!r} (expected one of {', '.join(MEDIA_TYPES)})")
    uri = str(record.get("media_uri") or "").strip() or None
    if uri and "://" not in uri and not Path(uri).is_absolute():
        uri = str((base / uri).resolve())
    if media_type in ("video", "image", "audio") and not uri:
        errors.append(f"{media_type} item has no media_uri")
    extra = {k: v for k, v in record.items() if k not in _CATALOG_COLUMNS}
    if record.get("metadata"):
        extra = {**_parse_metadata(record["metadata"]), **extra}
    return _item(str(record["item_id"]).strip(), uri, media_type or None, title, extra, errors)


def _parse_metadata(value) -> dict:
    if isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value)
    except (TypeError, json.JSONDecodeError):
        return {"metadata": str(value)}
    return parsed if isinstance(parsed, dict) else {"metadata": parsed}


def _has_undecodable(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _repair_utf8(value):
    """The value with surrogate-escaped bytes replaced by U+FFFD, inside JSON lists and objects too."""
    if isinstance(value, str):
        if not _has_undecodable(value):
            return value
        return value.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")
    if isinstance(value, list):
        return [_repair_utf8(v) for v in value]
    if isinstance(value, dict):
        return {_repair_utf8(k): _repair_utf8(v) for k, v in value.items()}
    return value


# ---- MicroLens -------------------------------------------------------------------------------------
def read_microlens(root: Path, limit: int | None = None) -> Catalog:
    """A MicroLens folder: the titles CSV, `videos/<id>.mp4`, and optional `covers/<id>.jpg`.

    Items whose video is absent fall back to their cover image, then to title-only text items, so that
    a partial download is still usable; the ingest summary counts each kind.
    """
    titles = _find_one(root, "*title*.csv")
    items = []
    with titles.open(encoding="utf-8", errors="surrogateescape", newline="") as handle:
        for number, line in enumerate(handle, start=1):
            video_id, _, title = line.rstrip("\r\n").partition(",")
            if not video_id.strip().isdigit():
                continue  # a header line
            video = root / "videos" / f"{video_id.strip()}.mp4"
            cover = root / "covers" / f"{video_id.strip()}.jpg"
            record = {"item_id": video_id.strip(), "title": title.strip(), "line": number}
            if video.exists():
                record |= {"media_uri": str(video.resolve()), "media_type": "video"}
            elif cover.exists():
                record |= {"media_uri": str(cover.resolve()), "media_type": "image"}
            else:
                record |= {"media_uri": None, "media_type": "text"}
            items.append((number, _manifest_item(record, root)))
            if limit and len(items) >= limit:
                break
    return _finish(items, "microlens")


def _find_one(root: Path, pattern: str) -> Path:
    found = sorted(root.glob(pattern))
    if not found:
        raise CatalogError(f"no file matching {pattern} in {root}")
    return found[0]


# ---- Amazon ----------------------------------------------------------------------------------------
def read_amazon_beauty(root: Path, limit: int | None = None) -> Catalog:
    """S3-Rec's Beauty set: the item text is its brand and categories, from the attribute maps."""
    maps = json.loads((root / "datamaps.json").read_text())
    item_attributes = json.loads((root / "Beauty_item2attributes.json").read_text())
    # Attribute j in item2attributes is the j-th datamaps attribute id (ascending) seen at least 5 times.
    kept = sorted(int(k) for k, n in maps["attributeid2num"].items() if n >= 5)
    names = {j + 1: maps["id2attribute"][str(a)] for j, a in enumerate(kept)}
    items = []
    for item_id in sorted(maps["id2item"], key=int)[:limit]:
        text = ", ".join(names[j] for j in item_attributes.get(item_id, []))
        items.append((int(item_id), _item(item_id, None, "text", text, {"asin": maps["id2item"][item_id]}, [])))
    return _finish(items, "amazon-beauty")


def read_amazon_scientific(root: Path, limit: int | None = None) -> Catalog:
    """Amazon 2018 Industrial and Scientific: titles, descriptions, brand and categories per item."""
    catalog = json.loads(_find_one(root, "*.item.json").read_text())
    items = []
    for item_id in sorted(catalog, key=int)[:limit]:
        info = dict(catalog[item_id])
        title = info.pop("title", None)
        items.append((int(item_id), _item(item_id, None, "text", title, info, [])))
    return _finish(items, "amazon-scientific")


# ---- shared ----------------------------------------------------------------------------------------
def _item(item_id, uri, media_type, title, metadata: dict, errors: list[str]) -> dict:
    return {
        "item_id": item_id,
        "media_uri": uri,
        "media_type": media_type,
        "title": title if title is None else str(title),
        "metadata": json.dumps(metadata, ensure_ascii=False, default=str) if metadata else None,
        "ingest_error": "; ".join(errors) or None,
    }


def _finish(items: list[tuple[int, dict]], source: str, rejected: list[str] | None = None) -> Catalog:
    """Keep the first row of each id, tag it with its duplicates, and build the Arrow table."""
    lines: dict[str, list[int]] = defaultdict(list)
    first: dict[str, dict] = {}
    for line, item in items:
        lines[item["item_id"]].append(line)
        first.setdefault(item["item_id"], item)
    duplicates = {k: len(v) for k, v in lines.items() if len(v) > 1}
    for item_id, count in duplicates.items():
        note = (f"item_id appears {count} times in the source (rows {', '.join(map(str, lines[item_id]))}); "
                "kept the first")
        row = first[item_id]
        row["ingest_error"] = f"{row['ingest_error']}; {note}" if row["ingest_error"] else note
        log.warning("duplicate item_id %r: %s", item_id, note)
    now = datetime.now(UTC)
    rows = [{**item, "ingest_source": source, "ingested_at": now} for item in first.values()]
    table = pa.Table.from_pylist(rows, schema=catalog_schema())
    return Catalog(table, source, list(rejected or []), duplicates)
