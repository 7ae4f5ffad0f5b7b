"""The item store's Arrow schema: the contract between seerec stages, defined here and nowhere else.

The table starts with the catalog columns. Each stage owns a *column family*: its output column plus
provenance (which model or settings produced it, and when) and an error column. Families are added to
the table the first time their stage writes, because vector widths depend on the configured encoder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

KEY = "item_id"
# The suffix of the extra that records why a family's stage skipped an item (see `Family.skip_column`).
SKIPPED = "skipped"
MEDIA_TYPES = ("video", "image", "audio", "text")
TIMESTAMP = pa.timestamp("us", tz="UTC")

# Declaring item_id as Lance's (unenforced) primary key makes merge_insert detect two writers inserting
# the same new id at once (a retried conflict) instead of committing both rows as duplicates.
PRIMARY_KEY = {"lance-schema:unenforced-primary-key": "true"}

CATALOG_FIELDS = [
    pa.field(KEY, pa.string(), nullable=False, metadata=PRIMARY_KEY),
    pa.field("media_uri", pa.string()),
    pa.field("media_type", pa.string()),
    pa.field("title", pa.string()),
    pa.field("metadata", pa.string()),  # JSON object with any extra catalog columns
    pa.field("ingest_source", pa.string()),
    pa.field("ingested_at", TIMESTAMP),
    pa.field("ingest_error", pa.string()),
]


def catalog_schema() -> pa.Schema:
    return pa.schema(CATALOG_FIELDS)


# The error record of a vector that holds NaN or an infinity (the store nulls it; quantize refuses it).
BAD_VECTOR = "vector holds NaN or infinite values"


def vector_type(dim: int) -> pa.DataType:
    return pa.list_(pa.float32(), dim)


@dataclass(frozen=True)
class Family:
    """A stage's columns: `value` plus `<value>_model`, `<value>_at`, `<value>_error` and any extras."""

    value: pa.Field
    extras: tuple[pa.Field, ...] = ()

    @property
    def name(self) -> str:
        return self.value.name

    @property
    def model_column(self) -> str:
        return self.model_column_of(self.name)

    @property
    def time_column(self) -> str:
        return f"{self.name}_at"

    @property
    def error_column(self) -> str:
        return f"{self.name}_error"

    @property
    def skip_column(self) -> str | None:
        """`<value>_skipped`, where the family records items its stage does not apply to (e.g. a silent video
        for an audio stage): a reason, a null value and no error, which `ItemStore.pending` counts as done."""
        name = f"{self.name}_{SKIPPED}"
        return name if name in {field.name for field in self.extras} else None

    def fields(self) -> list[pa.Field]:
        return [
            self.value,
            pa.field(self.model_column, pa.string()),
            pa.field(self.time_column, TIMESTAMP),
            pa.field(self.error_column, pa.string()),
            *self.extras,
        ]

    def schema(self) -> pa.Schema:
        """The columns a stage writes in one upsert: the key plus its family."""
        return pa.schema([pa.field(KEY, pa.string(), nullable=False), *self.fields()])

    def rows(self, keys, values, model_id: str, errors: Sequence[str | None], **extras) -> pa.Table:
        """A stage's output as rows of this family, stamped with its model and the time.

        `extras` are keyed by suffix (`source` fills `<value>_source`); a string or None is repeated on
        every row. Building rows here keeps the provenance naming in one place.
        """
        n = len(keys)
        columns = {KEY: keys, self.name: values, self.model_column: [model_id] * n,
                   self.time_column: [datetime.now(UTC)] * n, self.error_column: list(errors)}
        for field in self.extras:
            value = extras.pop(field.name.removeprefix(f"{self.name}_"), None)
            columns[field.name] = [value] * n if value is None or isinstance(value, str) else value
        if extras:
            raise TypeError(f"column family {self.name!r} has no columns for {sorted(extras)}")
        return pa.table(columns, schema=self.schema())

    def batch_rows(self, batch: Mapping[str, np.ndarray], value: str, model_id: str, **constants) -> pa.Table:
        """A model's numpy result batch as rows of this family: the one numpy-to-Arrow step of every stage.

        The batch holds `item_id`, `error`, the value under `value`, and per-item extras keyed by suffix
        (e.g. `tokens` fills `<value>_tokens`); `constants` fill the other extras on every row. A vector
        family declared without a width takes the width of the batch's vectors.
        """
        errors = error_values(batch["error"])
        skipped = error_values(batch[SKIPPED]) if SKIPPED in batch else np.full(len(errors), None, dtype=object)
        family = self
        if is_float_list(self.value.type):
            valid = np.array([e is None and s is None for e, s in zip(errors, skipped, strict=True)], dtype=bool)
            values = vector_column(np.asarray(batch[value]), valid)
            family = replace(self, value=self.value.with_type(values.type))
        else:
            values = arrow_values(batch[value], self.value.type)
        extras = {}
        for field in self.extras:
            suffix = field.name.removeprefix(f"{self.name}_")
            if suffix in batch:
                extras[suffix] = arrow_values(batch[suffix], field.type)
        return family.rows(pa.array(batch[KEY], pa.string()), values, model_id, errors, **extras, **constants)

    def of_rows(self, rows: pa.Table) -> Family:
        """This family with its value field as `rows` hold it (how a vector family learns its width)."""
        return replace(self, value=rows.schema.field(self.name))

    def extra_column(self, suffix: str) -> str:
        """The name of the extra column with this suffix, e.g. `prompt_id` -> `description_prompt_id`."""
        name = f"{self.name}_{suffix}"
        if name not in {field.name for field in self.extras}:
            raise TypeError(f"column family {self.name!r} has no column {name!r}")
        return name

    @staticmethod
    def model_column_of(column: str) -> str:
        """The provenance column of any family's value column, without knowing the family's type."""
        return f"{column}_model"


def vector_family(column: str, dim: int | None = None, skippable: bool = False) -> Family:
    """An embedding column; `<column>_source` records which text template or media it embedded.

    Without `dim` the width is left to the first result batch (`Family.batch_rows`), since it is known
    only once an actor has loaded the encoder. `skippable` adds `<column>_skipped` (see `Family.skip_column`).
    """
    value_type = pa.list_(pa.float32()) if dim is None else vector_type(dim)
    extras = (pa.field(f"{column}_source", pa.string()), *([skipped_field(column)] if skippable else []))
    return Family(pa.field(column, value_type), extras)


def skipped_field(column: str) -> pa.Field:
    """The extra of a family whose stage may find nothing to do for an item (e.g. no audio stream)."""
    return pa.field(f"{column}_{SKIPPED}", pa.string())


def transcript_family(column: str = "transcript") -> Family:
    """Speech as text, with the language the model heard and its probability."""
    return Family(pa.field(column, pa.string()), (
        pa.field(f"{column}_language", pa.string()),
        pa.field(f"{column}_language_probability", pa.float32()),
        skipped_field(column),
    ))


def description_family(column: str = "description") -> Family:
    """An MLLM description, with the prompt that asked for it, the generation settings and token counts."""
    return Family(pa.field(column, pa.string()), (
        pa.field(f"{column}_prompt_id", pa.string()),
        pa.field(f"{column}_params", pa.string()),
        pa.field(f"{column}_prompt_tokens", pa.int32()),
        pa.field(f"{column}_tokens", pa.int32()),
    ))


def audio_description_family(column: str = "audio_description") -> Family:
    """A description of what an item sounds like; an item without sound is recorded as skipped."""
    text = description_family(column)
    return Family(text.value, (*text.extras, skipped_field(column)))


def semantic_id_family(column: str = "semantic_id") -> Family:
    """An item's semantic ID: a short tuple of small code ints, unique across the catalog."""
    return Family(pa.field(column, pa.list_(pa.int16())))


def is_vector_field(field: pa.Field) -> bool:
    return pa.types.is_fixed_size_list(field.type) and pa.types.is_float32(field.type.value_type)


def is_float_list(value_type: pa.DataType) -> bool:
    """A vector type, with its width fixed or still open."""
    return ((pa.types.is_fixed_size_list(value_type) or pa.types.is_list(value_type))
            and pa.types.is_float32(value_type.value_type))


def vector_column(vectors: np.ndarray, valid: np.ndarray) -> pa.Array:
    """A 2-D float array as fixed_size_list<float32>[D], null where `valid` is False."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    flat = pa.array(vectors.reshape(-1), pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1], mask=pa.array(~valid))


def arrow_values(values, value_type: pa.DataType) -> pa.Array:
    """A numpy result column as Arrow. Ray Data may turn None in an object column into NaN, so a text
    column keeps only real strings."""
    if pa.types.is_string(value_type):
        return pa.array([v if isinstance(v, str) else None for v in values], value_type)
    return pa.array(values, value_type)


def error_values(values) -> np.ndarray:
    """Per-row error messages as an object array of str-or-None.

    Ray Data turns an all-None object column into nulls or NaN floats on the way between stages, so
    anything that is not a string means "no error".
    """
    return np.array([v if isinstance(v, str) else None for v in values], dtype=object)
