"""Catalog readers: each turns one source layout into catalog rows (the store's catalog columns).

Readers do not stop at a bad row. A row that can still be keyed becomes an item with an `ingest_error`
(among them a media_uri outside the media roots, see pipeline.media_roots); a row that cannot (no item_id,
or a later row of an id already read, whose first row is kept) is listed in `Catalog.rejected`, so nothing
disappears silently.
"""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa

from pipeline.errors import SeerecError
from pipeline.media_roots import LOCAL_SCHEMES, MediaRoots, local_path, uri_scheme
from pipeline.schema import CATALOG_FIELDS, MEDIA_TYPES, catalog_schema

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


def read_catalog(source: str, path: str | Path, limit: int | None = None, roots: Sequence[str] = (),
                 storage_options: Mapping[str, str] | None = None) -> Catalog:
    """Read a catalog of any supported layout. Media outside `roots` (default: the catalog's own folder, or
    a remote manifest's own prefix) is refused row by row. A manifest may be an object-store URI (s3://...),
    read with `storage_options` (the store's: endpoint, region, keys), or the environment for keys left out."""
    scheme = uri_scheme(str(path))
    if scheme not in LOCAL_SCHEMES:
        if source != "manifest":
            raise CatalogError(f"{source} reads a local dataset folder, not {path}; only a manifest (.parquet, .csv "
                               f"or .jsonl) can be read from {scheme}://")
        return read_manifest(str(path), limit, roots, storage_options)
    path = local_path(str(path))
    if not path.exists():
        raise CatalogError(f"catalog path {path} does not exist")
    if source == "manifest" and path.is_dir():
        raise CatalogError(f"manifest path {path} is a folder; give the manifest file (.parquet, .csv or .jsonl), "
                           "or --source for a dataset folder")
    if source in _FOLDER_SOURCES and not path.is_dir():
        raise CatalogError(f"{source} path {path} must be the dataset folder, not a file")
    if not path.is_dir() and not path.is_file():
        raise CatalogError(f"catalog path {path} is not a regular file")
    if source in _TEXT_READERS:
        return _TEXT_READERS[source](path, limit)
    return _MEDIA_READERS[source](path, limit, roots)


# ---- generic manifest --------------------------------------------------------------------------------
def read_manifest(path: Path | str, limit: int | None = None, roots: Sequence[str] = (),
                  storage_options: Mapping[str, str] | None = None) -> Catalog:
    """Parquet, CSV or JSONL with item_id, media_uri, media_type and optional title/metadata columns; a local
    file, or an object-store URI. Relative media paths are relative to the manifest's folder (or prefix)."""
    allowed = MediaRoots.for_catalog(roots, path)
    if uri_scheme(str(path)) in LOCAL_SCHEMES:
        path = local_path(str(path))
        name, base, data = path.name, path.parent, path.read_bytes()
    else:
        name, base, data = path.rsplit("/", 1)[-1], path.rsplit("/", 1)[0] + "/", _read_object(path, storage_options)
    if Path(name).suffix.lower() not in _MANIFEST_SUFFIXES:
        raise CatalogError(f"manifest {path} must be .parquet, .csv or .jsonl")
    records, rejected = _manifest_records(name, data)
    missing = [c for c in REQUIRED_MANIFEST_COLUMNS if records and c not in records[0][1]]
    if not records:
        raise CatalogError(f"manifest {path} has no rows")
    if missing:
        raise CatalogError(f"manifest {path} has no {missing[0]!r} column (required: "
                           f"{', '.join(REQUIRED_MANIFEST_COLUMNS)})")
    items = []
    for line, record in records[:limit] if limit else records:
        if not str(record.get("item_id") or "").strip():
            rejected.append(f"{name} row {line}: no item_id")
            continue
        items.append((line, _manifest_item(record, base, allowed)))
    return _finish(items, f"manifest:{name}", name, rejected)


# Lance's storage option names (as in store.storage_options) → pyarrow's S3FileSystem arguments.
_S3_OPTIONS = {"aws_access_key_id": "access_key", "access_key_id": "access_key",
               "aws_secret_access_key": "secret_key", "secret_access_key": "secret_key",
               "aws_session_token": "session_token", "session_token": "session_token", "aws_region": "region",
               "region": "region", "aws_endpoint": "endpoint_override", "endpoint": "endpoint_override",
               "aws_endpoint_url": "endpoint_override", "endpoint_url": "endpoint_override"}


def _read_object(uri: str, storage_options: Mapping[str, str] | None = None) -> bytes:
    """The bytes of one object-store file, or one sentence on why it cannot be read."""
    import pyarrow.fs

    try:
        filesystem, key = _filesystem(uri, storage_options or {})
        info = filesystem.get_file_info(key)
        if info.type == pyarrow.fs.FileType.NotFound:
            raise CatalogError(f"manifest {uri} does not exist")
        if info.type != pyarrow.fs.FileType.File:
            raise CatalogError(f"manifest {uri} is a folder (a prefix); give the manifest file (.parquet, .csv "
                               "or .jsonl)")
        with filesystem.open_input_stream(key) as stream:
            return stream.read()
    except (OSError, pa.ArrowException) as exc:  # no such bucket, refused credentials, unreachable endpoint
        raise CatalogError(f"manifest {uri} cannot be read ({_first_line(exc)}); check the URI, and "
                           "store.storage_options or the AWS_* environment for the endpoint and credentials") from None


def _first_line(exc: Exception) -> str:
    """An exception's first line (pyarrow's storage errors run on over several), for a one-sentence error."""
    return " ".join(str(exc).split("\n")[0].split()) or type(exc).__name__


def _filesystem(uri: str, options: Mapping[str, str]):
    """pyarrow's filesystem for `uri` and the path in it: S3 with the given options, anything else (and S3
    without options) as pyarrow resolves it from the URI and the environment."""
    import pyarrow.fs

    if uri_scheme(uri) != "s3" or not options:
        return pyarrow.fs.FileSystem.from_uri(uri)
    settings = {_S3_OPTIONS[k.lower()]: v for k, v in options.items() if k.lower() in _S3_OPTIONS}
    endpoint = settings.get("endpoint_override", os.environ.get("AWS_ENDPOINT_URL", ""))
    if endpoint:
        scheme, _, rest = endpoint.rpartition("://")
        plain = str(options.get("allow_http", os.environ.get("AWS_ALLOW_HTTP", ""))).lower() == "true"
        settings["endpoint_override"], settings["scheme"] = rest, scheme or ("http" if plain else "https")
    return pyarrow.fs.S3FileSystem(**settings), uri.split("://", 1)[1]


_MANIFEST_SUFFIXES = (".parquet", ".csv", ".jsonl", ".ndjson")


def _manifest_records(name: str, data: bytes) -> tuple[list[tuple[int, dict]], list[str]]:
    suffix = Path(name).suffix.lower()
    if suffix == ".parquet":
        try:
            frame = pd.read_parquet(io.BytesIO(data))
        except (OSError, pa.ArrowException) as exc:
            raise CatalogError(f"manifest {name} is not a readable Parquet file ({_first_line(exc)})") from None
        return [(i + 1, _clean(r)) for i, r in enumerate(frame.to_dict("records"))], []
    # utf-8-sig drops the byte-order mark that spreadsheet exports put before the first header.
    text = data.decode("utf-8-sig", errors="surrogateescape")
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        return [(i + 2, _clean(r)) for i, r in enumerate(reader)], []
    records, rejected = [], []  # JSON lines
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            rejected.append(f"{name} line {number}: not valid JSON ({exc.msg})")
            continue
        if isinstance(value, dict):
            records.append((number, _clean(value)))
        else:
            rejected.append(f"{name} line {number}: not a JSON object")
    return records, rejected


def _clean(record: dict) -> dict:
    return {k: (None if v is None or (isinstance(v, float) and v != v) else v) for k, v in record.items()}


def _manifest_item(record: dict, base: Path | str, roots: MediaRoots) -> dict:
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
    given = uri = str(record.get("media_uri") or "").strip() or None
    if uri and "://" not in uri and not Path(uri).is_absolute():  # relative to the manifest's folder or prefix
        # A remote prefix is joined as text; a leading '..' survives normpath, and the roots refuse it.
        uri = str((base / uri).resolve()) if isinstance(base, Path) else base + posixpath.normpath(uri)
    refusal = uri and roots.refusal(uri, given if uri == given else f"{given} (resolved: {uri})")
    if refusal:  # the row keeps its id and says why, but no later stage is handed the refused uri
        errors.append(refusal)
    elif media_type in ("video", "image", "audio") and not uri:
        errors.append(f"{media_type} item has no media_uri")
    extra = {k: v for k, v in record.items() if k not in _CATALOG_COLUMNS}
    if record.get("metadata"):
        extra = {**_parse_metadata(record["metadata"]), **extra}
    return _item(str(record["item_id"]).strip(), None if refusal else uri, media_type or None, title, extra, errors)


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
def read_microlens(root: Path, limit: int | None = None, roots: Sequence[str] = ()) -> Catalog:
    """A MicroLens folder: the titles CSV, `videos/<id>.mp4`, and optional `covers/<id>.jpg`.

    Items whose video is absent fall back to their cover image, then to title-only text items, so that
    a partial download is still usable; the ingest summary counts each kind.
    """
    titles = _find_one(root, "*title*.csv")
    allowed = MediaRoots.for_catalog(roots, root)
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
            items.append((number, _manifest_item(record, root, allowed)))
            if limit and len(items) >= limit:
                break
    return _finish(items, "microlens", titles.name)


def _read_json(path: Path):
    if not path.is_file():
        raise CatalogError(f"{path.name} is missing from {path.parent}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{path} is not valid JSON ({exc})") from None


def _numeric_first(value: str) -> tuple[int, int, str]:
    """Numeric ids in numeric order, before any other id."""
    return (0, int(value), "") if value.isdigit() else (1, 0, value)


def _find_one(root: Path, pattern: str) -> Path:
    found = sorted(root.glob(pattern))
    if not found:
        raise CatalogError(f"no file matching {pattern} in {root}")
    return found[0]


# ---- Amazon, S3-Rec layout ---------------------------------------------------------------------------
def read_s3rec(root: Path, limit: int | None = None) -> Catalog:
    """One Amazon category as S3-Rec released it (Beauty, Sports_and_Outdoors, Toys_and_Games, ...):
    `<Category>_item2attributes.json` plus the `datamaps.json` of its preprocessing. The item text is its
    brand and categories."""
    attributes_files = sorted(root.glob("*_item2attributes.json"))
    if len(attributes_files) != 1:
        found = ", ".join(f.name for f in attributes_files) or "none"
        raise CatalogError(f"an S3-Rec folder holds one <Category>_item2attributes.json next to its datamaps.json; "
                           f"{root} has {found}")
    attributes_file = attributes_files[0]
    category = attributes_file.name.removesuffix("_item2attributes.json")
    maps = _read_json(root / "datamaps.json")
    missing = [key for key in ("id2item", "id2attribute", "attributeid2num") if not isinstance(maps.get(key), dict)]
    if missing:
        raise CatalogError(f"{root / 'datamaps.json'} has no {missing[0]!r} map, which the S3-Rec layout needs")
    item_attributes = _read_json(attributes_file)
    names = _attribute_names(maps, item_attributes, attributes_file.name)
    items = []
    for item_id in sorted(maps["id2item"], key=_numeric_first)[:limit]:
        text = ", ".join(names[j] for j in item_attributes.get(item_id, []))
        items.append((int(item_id) if item_id.isdigit() else 0,
                      _item(item_id, None, "text", text, {"asin": maps["id2item"][item_id]}, [])))
    return _finish(items, f"s3rec:{category}", attributes_file.name)


def _attribute_names(maps: dict, item_attributes: dict, file_name: str) -> dict[int, str]:
    """What each attribute number of item2attributes names, checked against the datamaps counts.

    S3-Rec numbers from 1, in ascending datamaps id order, the attributes seen at least some threshold of
    times (5 for Beauty). The threshold is the one that keeps as many attributes as the file numbers, and
    then every attribute must sit on as many items as datamaps counted; anything else is another numbering,
    which would silently give items the wrong words.
    """
    if not isinstance(item_attributes, dict) or not all(
            isinstance(ids, list) and all(isinstance(j, int) for j in ids) for ids in item_attributes.values()):
        raise CatalogError(f"{file_name} must map each item id to a list of attribute numbers")
    used = Counter(j for ids in item_attributes.values() for j in ids)
    if not used:
        return {}
    counts = {int(a): n for a, n in maps["attributeid2num"].items()}
    for threshold in sorted(set(counts.values())):
        kept = sorted(a for a, n in counts.items() if n >= threshold)
        if len(kept) <= max(used):
            break
    if len(kept) != max(used) or min(used) < 1:
        raise CatalogError(f"{file_name} numbers attributes 1..{max(used)}, but no count threshold keeps that many "
                           "attributes of datamaps.json; the two files do not come from the same S3-Rec release")
    for number, attribute in enumerate(kept, start=1):
        if used[number] != counts[attribute]:
            raise CatalogError(
                f"{file_name} does not number the attributes of datamaps.json as S3-Rec does: attribute {number} "
                f"is on {used[number]} items, but the datamaps attribute it would be "
                f"({maps['id2attribute'].get(str(attribute))!r}) counts {counts[attribute]}")
    return {number: maps["id2attribute"][str(attribute)] for number, attribute in enumerate(kept, start=1)}


def read_amazon_scientific(root: Path, limit: int | None = None) -> Catalog:
    """Amazon 2018 Industrial and Scientific: titles, descriptions, brand and categories per item."""
    item_file = _find_one(root, "*.item.json")
    catalog = _read_json(item_file)
    items = []
    for item_id in sorted(catalog, key=int)[:limit]:
        info = dict(catalog[item_id])
        title = info.pop("title", None)
        items.append((int(item_id), _item(item_id, None, "text", title, info, [])))
    return _finish(items, "amazon-scientific", item_file.name)


# ---- RecBole atomic files ----------------------------------------------------------------------------
_ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")


def read_recbole(path: Path, limit: int | None = None, roots: Sequence[str] = ()) -> Catalog:
    """RecBole atomic files: a `.item` file (or the folder holding it), whose fields beyond item_id become
    metadata and whose `title` (or `*_title`) field the title; without one, the item ids of the `.inter` file.

    A `media_uri` and `media_type` field, if present, are read as in a manifest (text items otherwise).
    """
    file = path if path.is_file() else next(iter(sorted(path.glob("*.item"))), None) or _find_one(path, "*.inter")
    names, records, rejected = read_atomic_file(file)
    if "item_id" not in names:
        raise CatalogError(f"{file.name} has no item_id field (its header names {', '.join(names)})")
    if file.suffix == ".inter":
        first_rows: dict[str, int] = {}
        for line, record in records:  # the catalog is each item once, not once per interaction
            first_rows.setdefault(record["item_id"], line)
        records = [(line, {"item_id": item_id}) for item_id, line in first_rows.items()]
    title = next((n for n in names if n == "title"), None) or next((n for n in names if n.endswith("title")), None)
    allowed = MediaRoots.for_catalog(roots, file)
    items = []
    for line, record in records[:limit] if limit else records:
        if not record.get("item_id"):
            rejected.append(f"{file.name} row {line}: no item_id")
            continue
        text = record.pop(title, None) if title else None
        record = {"media_type": "text", **record, "title": text}
        items.append((line, _manifest_item(record, file.parent, allowed)))
    return _finish(items, f"recbole:{file.name}", file.name, rejected)


def read_atomic_file(file: Path) -> tuple[list[str], list[tuple[int, dict]], list[str]]:
    """Field names (the `name` of each `name:type` header), the rows as (line, {name: text or None}), and the
    rows it could not read, of a tab-separated RecBole atomic file (`.item`, `.inter`, ...)."""
    lines = file.read_bytes().decode("utf-8-sig", errors="surrogateescape").splitlines()
    if not lines:
        raise CatalogError(f"{file.name} is empty")
    names = []
    for field_spec in lines[0].split("\t"):
        name, _, kind = field_spec.strip().rpartition(":")
        if not name or kind not in _ATOMIC_TYPES:
            raise CatalogError(f"{file.name} header field {field_spec!r} is not name:type (type one of "
                               f"{', '.join(_ATOMIC_TYPES)})")
        names.append(name)
    records, rejected = [], []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        values = line.split("\t")
        if len(values) != len(names):
            rejected.append(f"{file.name} row {number}: the header names {len(names)} fields, it has {len(values)}")
            continue
        records.append((number, {n: (v.strip() or None) for n, v in zip(names, values, strict=True)}))
    return names, records, rejected


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


def _finish(items: list[tuple[int, dict]], source: str, origin: str, rejected: list[str] | None = None) -> Catalog:
    """Keep the first row of each id; each later row of it is listed as rejected (the kept one is no failure)."""
    rejected = list(rejected or [])
    lines: dict[str, list[int]] = defaultdict(list)
    first: dict[str, dict] = {}
    for line, item in items:
        lines[item["item_id"]].append(line)
        first.setdefault(item["item_id"], item)
    duplicates = {k: len(v) for k, v in lines.items() if len(v) > 1}
    for item_id in duplicates:
        kept, *repeats = lines[item_id]
        rejected += [f"{origin} row {line}: item_id {item_id!r} repeats row {kept}, which was kept" for line in repeats]
    now = datetime.now(UTC)
    rows = [{**item, "ingest_source": source, "ingested_at": now} for item in first.values()]
    table = pa.Table.from_pylist(rows, schema=catalog_schema())
    return Catalog(table, source, rejected, duplicates)


# Readers of layouts that name media files get the media roots; the Amazon ones hold text only.
_MEDIA_READERS = {"manifest": read_manifest, "microlens": read_microlens, "recbole": read_recbole}
_TEXT_READERS = {"s3rec": read_s3rec, "amazon-beauty": read_s3rec, "amazon-scientific": read_amazon_scientific}
_FOLDER_SOURCES = {"microlens", *_TEXT_READERS}
