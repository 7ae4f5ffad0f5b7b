"""The LanceDB item store: one table, one row per item, written in bulk and keyed on `item_id`.

Stages never write rows one at a time. They hand the store Arrow tables holding the key plus their own
column family, and the store merges them in, retrying when another writer committed first: a family new to
the table is joined on as new columns (only those columns are written), an existing one is updated with
`merge_insert`. A stage's driver stages its flushes first (see `stage_family`) and merges them once at the
end, because each merge reads the whole item table. Reads used to plan work (what is still to do) go through
Lance's scanner so that filters are pushed down.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lancedb.index import BTree, IvfHnswSq, IvfPq

from pipeline.config import StoreConfig
from pipeline.errors import SeerecError
from pipeline.filters import Condition, quote_text, to_sql
from pipeline.schema import BAD_VECTOR, KEY, SKIPPED, Family, catalog_schema, is_vector_field

log = logging.getLogger(__name__)


class StoreError(SeerecError, RuntimeError):
    """A store problem the user must fix (missing table, missing column, wrong vector width)."""


@dataclass
class UpsertResult:
    inserted: int = 0
    updated: int = 0
    attempts: int = 0

    def __iadd__(self, other: UpsertResult) -> UpsertResult:
        self.inserted += other.inserted
        self.updated += other.updated
        self.attempts += other.attempts
        return self


class ItemStore:
    """A handle on the item table. Cheap to create; safe to create in every Ray worker.

    Nothing is connected until the store is used, and only `create_if_missing` creates anything: connecting
    LanceDB to a local folder makes the folder, so reads check that it is there first.
    """

    def __init__(self, cfg: StoreConfig):
        self.cfg = cfg
        self._db = None
        self._table = None
        self._staging: dict = {}  # this handle's open staging tables, by name

    # ---- table lifecycle -------------------------------------------------------------------------
    @property
    def db(self) -> lancedb.DBConnection:
        if self._db is None:
            self._db = lancedb.connect(
                self.cfg.uri,
                storage_options=self.cfg.storage_options or None,
                # Always read the latest committed version, so that writers in other processes are visible.
                read_consistency_interval=timedelta(0),
            )
        return self._db

    @property
    def table(self):
        if self._table is None:
            if not self.exists():
                folder = _local_folder(self.cfg.uri)
                if folder is not None and not folder.is_dir():
                    raise StoreError(f"there is no item store at {self.cfg.uri}; run `seerec ingest` first "
                                     "or set store.uri to an existing store")
                raise StoreError(f"the store at {self.cfg.uri} has no table {self.cfg.table!r}; "
                                 "run `seerec ingest` first")
            self._table = self.db.open_table(self.cfg.table)
        return self._table

    def exists(self) -> bool:
        folder = _local_folder(self.cfg.uri)
        if folder is not None and not folder.is_dir():
            return False  # connecting would create the folder
        return self.cfg.table in self.db.list_tables().tables

    def create_if_missing(self) -> None:
        folder = _local_folder(self.cfg.uri)
        if folder is not None and folder.exists() and not folder.is_dir():
            raise StoreError(f"store.uri {self.cfg.uri} is a file; an item store is a folder")
        if not self.exists():
            self.db.create_table(self.cfg.table, schema=catalog_schema(), exist_ok=True)
            log.info("created item table %s at %s", self.cfg.table, self.cfg.uri)

    @property
    def schema(self) -> pa.Schema:
        return self.table.schema

    def count(self, where: str | None = None) -> int:
        return self.table.count_rows(where)

    def ensure_family(self, family: Family) -> None:
        """Add a stage's columns (all null) the first time it writes; check widths every time after."""
        missing = self._missing_fields(family)
        if missing:
            self._retry(lambda: self.table.add_columns(pa.schema(missing)), "add columns")
            log.info("added columns %s", ", ".join(f.name for f in missing))

    def _missing_fields(self, family: Family) -> list[pa.Field]:
        """The family's fields the table lacks, after checking that those it has hold the family's types."""
        schema = self.schema
        for field in family.fields():
            if field.name in schema.names and schema.field(field.name).type != field.type:
                raise StoreError(
                    f"store column {field.name!r} holds {schema.field(field.name).type} but this stage "
                    f"writes {field.type}; write to another column or re-create the store"
                )
        return [f for f in family.fields() if f.name not in schema.names]

    # ---- writes ----------------------------------------------------------------------------------
    def upsert(self, rows: pa.Table, insert_new: bool = True) -> UpsertResult:
        """Merge rows on item_id. Without insert_new, rows for unknown items are dropped (stage writes)."""
        if rows.num_rows == 0:
            return UpsertResult()
        _check_unique(rows)
        # Lance refuses a nullable primary-key field in the source, even one without nulls (checked above).
        key = rows.schema.get_field_index(KEY)
        rows = rows.cast(rows.schema.set(key, rows.schema.field(key).with_nullable(False)))

        def merge():
            builder = self.table.merge_insert(KEY).when_matched_update_all()
            if insert_new:
                # The scan join (not the item_id index) records the inserted ids, so two writers inserting
                # the same new id conflict and retry instead of both committing it (needs PRIMARY_KEY).
                builder = builder.when_not_matched_insert_all().use_index(False)
            # Null vectors mark failed items; LanceDB must keep them as nulls rather than reject them.
            return builder.execute(rows, on_bad_vectors="null")

        result, attempts = self._retry(merge, "merge_insert")
        return UpsertResult(result.num_inserted_rows, result.num_updated_rows, attempts)

    def write_family(self, family: Family, rows: pa.Table) -> UpsertResult:
        """Write a family's rows onto existing items in one commit; rows for unknown items are dropped."""
        rows = null_bad_vectors(family, rows.select(family.schema().names).cast(family.schema()))
        _check_unique(rows)
        return self._write_checked_family(family, rows)

    def _write_checked_family(self, family: Family, rows: pa.Table) -> UpsertResult:
        """`write_family` for rows already in the family's schema, with unique keys and bad vectors nulled."""
        if rows.num_rows and len(self._missing_fields(family)) == len(family.fields()) and self.count():
            # A new family: only the new columns are written, in the table's own row order.
            written, attempts = self._retry(lambda: _add_family_columns(self.table.to_lance(), rows), "add columns")
            return UpsertResult(updated=written, attempts=attempts)
        self.ensure_family(family)
        result = UpsertResult()  # in parts: merge_insert joins in a fixed memory pool that a large source exceeds
        per_merge = max(1, _MERGE_BYTES * rows.num_rows // max(1, rows.nbytes))
        for offset in range(0, rows.num_rows, per_merge):
            result += self.upsert(rows.slice(offset, per_merge), insert_new=False)
        return result

    # ---- staged family writes: a stage's flushes are appended, then merged once ---------------------
    def stage_family(self, family: Family, rows: pa.Table, job: str) -> None:
        """Append a flush to the job's staging table: an append never reads the item table and never
        conflicts, where a merge per flush would read the whole table every time. A flush staged here is
        done for a later run (see `commit_staged`), so a kill loses only what was never flushed."""
        if not _STAGING_JOB.fullmatch(job):
            raise ValueError(f"a job id is a uuid4().hex, not {job!r}; `staging_tables` would not find it")
        rows = null_bad_vectors(family, rows.select(family.schema().names).cast(family.schema()))
        name = f"{self._staging_prefix(family.name)}{job}"
        if name not in self._staging:
            self._missing_fields(family)  # a wrong width fails at the first flush, not at the end
            self._staging[name] = self.db.create_table(name, schema=rows.schema)
        # Bad vectors are nulls by now, which LanceDB's native append accepts; any `on_bad_vectors` policy would
        # send every flush through its Python checks first, making the append slower than a bare `table.add`.
        self._staging[name].add(rows)

    def commit_staged(self, family: Family) -> UpsertResult:
        """Merge every staging table of the family in one write (an update of an existing column takes one
        per 128 MB), then drop them: this job's, and any a killed job left (adopted, so that its flushed work
        is not redone; a kill before the drop only repeats the merge). The item table shows staged rows only after
        this. Two live jobs must not write the same family: one would adopt the other's staging table."""
        names = self.staging_tables(family.name)
        if not names:
            return UpsertResult()
        # Staged rows were put in the family's schema and had their bad vectors nulled by `stage_family`.
        rows = _latest_per_key(pa.concat_tables([self.db.open_table(n).to_arrow() for n in names]),
                               family.time_column)
        result = self._write_checked_family(family.of_rows(rows), rows)
        for name in names:
            self.db.drop_table(name, ignore_missing=True)
            self._staging.pop(name, None)
        log.info("merged %d staged %s rows from %d staging table(s)", rows.num_rows, family.name, len(names))
        return result

    def staging_tables(self, family_name: str) -> list[str]:
        """The staging tables holding flushed but unmerged rows of a family, one per job that wrote them."""
        prefix = self._staging_prefix(family_name)
        return sorted(t for t in self.db.list_tables().tables
                      if t.startswith(prefix) and _STAGING_JOB.fullmatch(t.removeprefix(prefix)))

    def _staging_prefix(self, family_name: str) -> str:
        return f"{self.cfg.table}__stage__{family_name}__"

    def _retry(self, operation, what: str):
        """Run a commit, retrying with jittered backoff when a concurrent writer won the race."""
        for attempt in range(1, self.cfg.commit_retries + 2):
            try:
                return operation(), attempt
            except Exception as exc:  # Lance reports conflicts as plain OSError/RuntimeError
                if not _lost_commit_race(exc) or attempt > self.cfg.commit_retries:
                    raise
                delay = min(5.0, 0.05 * 2**attempt) * (0.5 + random.random())
                log.warning("%s hit a commit conflict (attempt %d), retrying in %.2fs", what, attempt, delay)
                time.sleep(delay)
                self.table.checkout_latest()
        raise AssertionError("unreachable")

    # ---- reads -----------------------------------------------------------------------------------
    def scan(self, columns: Sequence[str] | None = None, where: str | None = None, offset: int | None = None,
             limit: int | None = None) -> pa.Table:
        """Rows matching `where`; `offset`/`limit` page through them without reading the rest."""
        if columns is not None:
            self.require_columns(columns)
        return self.table.to_lance().to_table(columns=list(columns) if columns else None, filter=where,
                                              offset=offset, limit=limit)

    def require_columns(self, columns: Iterable[str], schema: pa.Schema | None = None) -> None:
        names = (schema or self.schema).names
        missing = [c for c in columns if c not in names]
        if missing:
            raise StoreError(f"the store has no column {missing[0]!r}; available: {', '.join(names)}")

    def pending(self, family: Family, model_id: str, columns: Sequence[str], force: bool = False,
                where: str | None = None, settings: dict[str, Sequence[str]] | None = None,
                also_done_by: Sequence[str] = ()) -> pa.Table:
        """Rows a stage still has to do: never done by this model (or by `also_done_by`, other recorded ids of
        the same model), with, per `settings` column, one of the accepted values (e.g. the current prompt
        ids), or failed last time. An item the model skipped (a reason in the family's skip column, no value)
        is done: there is nothing to retry."""
        conditions = [where] if where else []
        schema = self.schema
        if not force and family.model_column in schema.names:
            models = ", ".join(quote_text(m) for m in (model_id, *also_done_by))
            other_model = [f"`{family.model_column}` IS NULL", f"`{family.model_column}` NOT IN ({models})"]
            # Spelled out with IS NULL, because `NOT (model = x AND ...)` is NULL, not true, when model is NULL.
            redo = [*other_model, f"`{family.error_column}` IS NOT NULL", f"`{family.name}` IS NULL"]
            for column, accepted in (settings or {}).items():
                values = ", ".join(quote_text(v) for v in accepted)
                redo += [f"`{column}` IS NULL", f"`{column}` NOT IN ({values})"]
            conditions.append(" OR ".join(redo))
            if family.skip_column in schema.names:  # skipped by this model: done, whatever the settings
                conditions.append(" OR ".join([f"`{family.skip_column}` IS NULL", *other_model]))
        return self.scan([KEY, *columns], " AND ".join(f"({c})" for c in conditions) or None)

    def get(self, item_ids: Sequence[str], columns: Sequence[str] | None = None) -> pa.Table:
        ids = ", ".join(quote_text(i) for i in item_ids)
        return self.scan(columns, f"`{KEY}` IN ({ids})") if item_ids else self.scan(columns).slice(0, 0)

    def stage_counts(self) -> list[dict]:
        """Per column family (every `<column>_error`): items filled, failed, skipped and still pending, and
        the filled items per model; what `seerec store info` and the explorer's stages page show."""
        schema = self.schema
        total = self.count()
        rows = []
        for field in schema:
            if not field.name.endswith("_error"):
                continue
            column = field.name.removesuffix("_error")
            errors = self.count(f"`{field.name}` IS NOT NULL")
            row = {"column": column, "filled": None, "errors": errors, "skipped": 0, "pending": None, "models": {}}
            if column in schema.names:
                row["filled"] = self.count(f"`{column}` IS NOT NULL")
                skip = f"{column}_{SKIPPED}"
                if skip in schema.names:
                    row["skipped"] = self.count(f"`{skip}` IS NOT NULL AND `{column}` IS NULL")
                row["pending"] = total - row["filled"] - row["skipped"] - self.count(
                    f"`{field.name}` IS NOT NULL AND `{column}` IS NULL")
                model = Family.model_column_of(column)
                if model in schema.names:
                    models = pc.value_counts(self.scan([model], f"`{column}` IS NOT NULL")[model]).to_pylist()
                    row["models"] = {m["values"]: m["counts"] for m in models if m["values"] is not None}
            rows.append(row)
        return rows

    def model_ids(self, column: str) -> list[str]:
        """The distinct models that filled a column, e.g. to re-load the encoder for a text query."""
        model_column = Family.model_column_of(column)
        self.require_columns([model_column])
        values = self.scan([model_column], f"`{column}` IS NOT NULL")[model_column]
        return sorted(v for v in pc.unique(values).to_pylist() if v is not None)

    # ---- search ----------------------------------------------------------------------------------
    def search_vector(self, column: str, vector: np.ndarray, k: int = 10,
                      conditions: Sequence[Condition | str] = (), columns: Sequence[str] | None = None,
                      exclude: Sequence[str] = ()) -> pa.Table:
        """Nearest items to a vector, optionally restricted by safe structured conditions."""
        if k < 1:
            raise StoreError(f"a search returns at least 1 item, not k={k}")
        schema = self.schema  # one read: each read of a consistent table checks for a newer version
        self._vector_field(column, len(vector), schema)
        where = to_sql(conditions, schema)
        if exclude:
            skip = f"`{KEY}` NOT IN ({', '.join(quote_text(i) for i in exclude)})"
            where = f"{where} AND {skip}" if where else skip
        select = list(columns) if columns else [c.name for c in schema if not is_vector_field(c)]
        query = self.table.search(np.asarray(vector, np.float32), vector_column_name=column)
        query = query.distance_type(self.cfg.metric).select([*select, "_distance"]).limit(k)
        if self.cfg.search_refine_factor:
            query = query.refine_factor(self.cfg.search_refine_factor)
        if where:
            query = query.where(where, prefilter=True)
        return query.to_arrow()

    def neighbours(self, item_id: str, column: str, k: int = 10, conditions: Sequence[Condition | str] = (),
                   columns: Sequence[str] | None = None) -> pa.Table:
        skip = f"{column}_{SKIPPED}"
        row = self.get([item_id], [column, *([skip] if skip in self.schema.names else [])])
        if row.num_rows == 0:
            raise StoreError(f"no item {item_id!r} in the store")
        vector = row[column][0].values
        if vector is None or row[column].null_count:
            reason = row[skip][0].as_py() if skip in row.column_names else None
            if reason:  # a recorded outcome (e.g. no text to embed), not work still to do
                raise StoreError(f"item {item_id!r} has no {column}: {reason}")
            raise StoreError(f"item {item_id!r} has no {column} yet; run the stage that fills it")
        return self.search_vector(column, vector.to_numpy(zero_copy_only=False), k, conditions, columns,
                                  exclude=[item_id])

    def _vector_field(self, column: str, dim: int | None = None, schema: pa.Schema | None = None) -> pa.Field:
        schema = schema or self.schema
        self.require_columns([column], schema)
        field = schema.field(column)
        if not is_vector_field(field):
            raise StoreError(f"column {column!r} is not a vector column (it holds {field.type})")
        if dim is not None and field.type.list_size != dim:
            raise StoreError(f"query vector has {dim} dimensions but {column!r} has {field.type.list_size}")
        return field

    # ---- end-of-job maintenance --------------------------------------------------------------------
    def finalize(self, vector_columns: Sequence[str] = ()) -> None:
        """Once per job: compact, index item_id, and (re)build vector indexes on big enough tables."""
        self._retry(lambda: self.table.optimize(), "optimize")
        if not any(KEY in idx.columns for idx in self.table.list_indices()):
            self._retry(lambda: self.table.create_index(KEY, config=BTree(), replace=True), "index item_id")
        for column in vector_columns:
            self.ensure_vector_index(column)

    def ensure_vector_index(self, column: str) -> bool:
        field = self._vector_field(column)
        rows = self.count(f"`{column}` IS NOT NULL")
        if rows < self.cfg.index_min_rows:
            log.info("%s has %d vectors (< %d): exact search, no index", column, rows, self.cfg.index_min_rows)
            return False
        partitions = max(1, int(np.sqrt(rows)))
        if self.cfg.index_type == "ivf_pq":
            sub_vectors = next(d for d in (16, 8, 4, 2, 1) if field.type.list_size % d == 0)
            config = IvfPq(distance_type=self.cfg.metric, num_partitions=partitions, num_sub_vectors=sub_vectors)
        else:
            config = IvfHnswSq(distance_type=self.cfg.metric, num_partitions=max(1, partitions // 8))
        started = time.perf_counter()
        self._retry(lambda: self.table.create_index(column, config=config, replace=True), "create index")
        log.info("built %s index on %s (%d rows) in %.1fs", self.cfg.index_type, column, rows,
                 time.perf_counter() - started)
        return True

    # ---- versions --------------------------------------------------------------------------------
    def versions(self) -> list[dict]:
        """Every version with its time, rows and the tags (see `tag_version`) that name it."""
        tags: dict[int, list[str]] = {}
        for name, tag in sorted(self.table.tags.list().items()):
            tags.setdefault(tag["version"], []).append(name)
        return [{"version": v["version"], "timestamp": v["timestamp"], "rows": v["metadata"].get("total_rows"),
                 "tags": ", ".join(tags.get(v["version"], []))}
                for v in self.table.list_versions()]

    def tags(self) -> list[dict]:
        """The tags on the table, oldest first, with what `tag_version` recorded about the stage run."""
        tags = self.table.to_lance().tags.list()
        rows = [{"tag": name, "version": tag["version"], **tag["metadata"]} for name, tag in tags.items()]
        return sorted(rows, key=lambda row: (row["version"], row["tag"]))

    def tag_version(self, stage: str, model_id: str | None = None, column: str | None = None,
                    seconds: float | None = None) -> str:
        """Name the version a stage ended at, `<stage>-<column>-<UTC time>`, so that `store restore` need not
        guess; the tag also records the model and run time. Call it once, after the stage's last commit."""
        finished = datetime.now(UTC)
        base = _TAG_UNSAFE.sub("_", "-".join(p for p in (stage, column, finished.strftime("%Y%m%dT%H%M%SZ")) if p))
        recorded = {"stage": stage, "model": model_id, "column": column,
                    "finished_at": finished.isoformat(timespec="seconds"),
                    "seconds": None if seconds is None else f"{seconds:.1f}"}
        version = self.table.version
        for attempt in count(1):
            name = base if attempt == 1 else f"{base}-{attempt}"
            try:
                self.table.tags.create(name, version)
                break
            except Exception:  # Lance reports a taken name as a plain error: another run ended this second
                if name not in self.table.tags.list():
                    raise
        self.table.to_lance().tags.replace_metadata(name, {k: v for k, v in recorded.items() if v is not None})
        log.info("tagged version %d as %s", version, name)
        return name

    def restore(self, version: int) -> None:
        """Make an older version the newest one (a new commit; history is kept)."""
        known = {v["version"] for v in self.table.list_versions()}
        if version not in known:
            raise StoreError(f"the store has no version {version}; it has {min(known)}..{max(known)}")
        self.table.checkout(version)
        self.table.restore()


_ADD_BATCH_ROWS = 65_536  # rows per batch streamed into a new family's columns
_MERGE_BYTES = 128 << 20  # Lance's merge_insert fails on a source of ~300 MB (its join's memory pool)
_STAGING_JOB = re.compile(r"[0-9a-f]{32}")  # a job's uuid4().hex, so that family `a` never lists `a__b`'s tables
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")  # Lance allows only these characters in a tag name


def null_bad_vectors(family: Family, rows: pa.Table) -> pa.Table:
    """A vector holding NaN or an infinity becomes a null vector with an error record, on every write path:
    LanceDB's merge_insert would null it silently, its column merge would keep it, and no search or
    quantizer can use it."""
    if not pa.types.is_fixed_size_list(family.value.type) or not rows.num_rows:
        return rows
    vectors = rows[family.name].combine_chunks()
    finite = np.isfinite(vectors.values.to_numpy(zero_copy_only=False).reshape(len(vectors), -1)).all(axis=1)
    bad = ~finite & vectors.is_valid().to_numpy(zero_copy_only=False)
    if not bad.any():
        return rows
    cleaned = pa.FixedSizeListArray.from_arrays(vectors.values, type=vectors.type,
                                                mask=pa.array(bad | ~vectors.is_valid().to_numpy(zero_copy_only=False)))
    errors = rows[family.error_column].to_pylist()
    errors = [BAD_VECTOR if b and e is None else e for b, e in zip(bad, errors, strict=True)]
    log.warning("%d %s vector(s) hold NaN or infinite values; stored as null with an error record",
                int(bad.sum()), family.name)
    rows = rows.set_column(rows.schema.get_field_index(family.name), rows.schema.field(family.name), cleaned)
    index = rows.schema.get_field_index(family.error_column)
    return rows.set_column(index, rows.schema.field(index), pa.array(errors, pa.string()))


def _local_folder(uri: str) -> Path | None:
    """The folder of a local store; None for an object store, where connecting creates nothing."""
    if uri.startswith("file://"):
        return Path(uri.removeprefix("file://"))
    return None if "://" in uri else Path(uri)


def _lost_commit_race(exc: Exception) -> bool:
    """Lance's words for "another writer committed first": a conflict, or its own retries running out
    ("Too many concurrent writers", after its internal retry timeout, which a slow object store can hit)."""
    message = str(exc).lower()
    return "conflict" in message or "too many concurrent writers" in message


def _check_unique(rows: pa.Table) -> None:
    keys = rows[KEY]
    if keys.null_count:
        raise StoreError("rows to write have a null item_id")
    if pc.count_distinct(keys).as_py() != rows.num_rows:
        raise StoreError("rows to write repeat an item_id; the caller must report duplicates before writing")


def _add_family_columns(dataset, rows: pa.Table) -> int:
    """Add a new family's columns to the item table in one commit and return how many items got a row.

    The rows are put in the table's scan order (a null row for an item without one) and streamed to Lance's
    `add_columns`, which writes only the new columns: the same result as Lance's `merge` on item_id, which
    took about a quarter more CPU for it at 100k rows.
    """
    at = pc.index_in(dataset.to_table(columns=[KEY])[KEY], rows[KEY]).combine_chunks()  # per item: its row, or null
    values = rows.drop_columns([KEY]).combine_chunks()  # a take from one chunk; a chunked take is far slower

    def aligned():
        for start in range(0, len(at), _ADD_BATCH_ROWS):
            yield from values.take(at.slice(start, _ADD_BATCH_ROWS)).to_batches()

    dataset.add_columns(pa.RecordBatchReader.from_batches(values.schema, aligned()))
    return len(at) - at.null_count


def _latest_per_key(rows: pa.Table, time_column: str) -> pa.Table:
    """One row per item_id, the most recently written one (a forced re-run can stage an item twice)."""
    if pc.count_distinct(rows[KEY]).as_py() == rows.num_rows:
        return rows
    rows = rows.take(pc.sort_indices(rows, [(time_column, "descending")]))
    _, first = np.unique(rows[KEY].to_numpy(zero_copy_only=False), return_index=True)
    return rows.take(np.sort(first))
