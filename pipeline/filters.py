"""Safe store filters: users give `column op value` conditions and seerec writes the SQL.

LanceDB filters are SQL strings. Passing a user's string through would let it inject any predicate
(or a syntax error deep inside a job), so conditions are parsed, the column is checked against the
table's scalar columns, the operator against a short list, and the value is quoted by us.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa

from pipeline.errors import SeerecError

_CONDITION = re.compile(
    r"^\s*(?P<column>[A-Za-z_][A-Za-z0-9_]*)\s*"
    r"(?P<op>!=|>=|<=|=|>|<|\bin\b|\bcontains\b|\bis\s+not\s+null\b|\bis\s+null\b)\s*(?P<value>.*?)\s*$",
    re.IGNORECASE,
)
_OPS = ("=", "!=", "<", "<=", ">", ">=", "in", "contains", "is null", "is not null")
_IN_BRACKETS = {"(": ")", "[": "]"}
# One value of an `in` list: 'single quoted' (with '' for a quote), "double quoted", or bare up to a comma.
_IN_VALUE = re.compile(r"""\s*(?:'(?P<single>(?:[^']|'')*)'|"(?P<double>[^"]*)"|(?P<bare>[^,'"][^,]*)?)\s*""")
_IN_SYNTAX = "write it as: column in (a, b, c), quoting values that hold commas or brackets"


class FilterError(SeerecError, ValueError):
    """A condition that cannot be turned into a safe filter; the message names the problem."""


@dataclass(frozen=True)
class Condition:
    column: str
    op: str
    value: object = None

    def to_sql(self, schema: pa.Schema) -> str:
        field = _scalar_field(schema, self.column)
        if self.op not in _OPS:  # a Condition built in code skips parse_condition; its op goes into the SQL
            raise FilterError(f"unknown filter operator {self.op!r}; use one of {', '.join(_OPS)}")
        column = f"`{self.column}`"
        if self.op in ("is null", "is not null"):
            return f"{column} {self.op.upper()}"
        if self.op == "contains":
            if not pa.types.is_string(field.type):
                raise FilterError(f"'contains' needs a text column, and {self.column} is {field.type}")
            pattern = str(self.value).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            return f"{column} LIKE {_quote_text('%' + pattern + '%')} ESCAPE '\\'"
        if self.op == "in":
            values = self.value if isinstance(self.value, list | tuple) else str(self.value).split(",")
            if not values:
                raise FilterError(f"'in' needs at least one value for {self.column}")
            return f"{column} IN ({', '.join(_literal(field, v) for v in values)})"
        return f"{column} {self.op} {_literal(field, self.value)}"


def parse_condition(text: str) -> Condition:
    """Parse `title contains cat`, `media_type = video`, `item_id in (a, b)` or `describe_error is null`."""
    match = _CONDITION.match(text)
    if not match:
        raise FilterError(f"cannot read filter {text!r}; write it as: column op value (op one of =, !=, <, "
                          "<=, >, >=, in, contains, is null, is not null), e.g. media_type in (video, image)")
    op = " ".join(match["op"].lower().split())
    value = match["value"]
    if op in ("is null", "is not null"):
        if value:
            raise FilterError(f"filter {text!r}: nothing may follow '{op}'")
        return Condition(match["column"], op)
    if not value:
        raise FilterError(f"filter {text!r} has no value after '{op}'")
    if op == "in":
        return Condition(match["column"], op, _in_values(value, text))
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return Condition(match["column"], op, value)


def _in_values(text: str, condition: str) -> list[str]:
    """The list after `in` as users write it: `a, b`, `(a, b)` or `[a, b]`, values bare or quoted."""
    opener = text[0] if text[0] in _IN_BRACKETS else ""
    if (opener and not text.endswith(_IN_BRACKETS[opener])) or (not opener and text[-1] in ")]"):
        raise FilterError(f"filter {condition!r}: the list after 'in' has unbalanced brackets; {_IN_SYNTAX}")
    inner = text[1:-1] if opener else text
    values, position = [], 0
    while True:
        item = _IN_VALUE.match(inner, position)
        if item["single"] is not None:
            values.append(item["single"].replace("''", "'"))
        elif item["double"] is not None:
            values.append(item["double"])
        elif item["bare"] and item["bare"].strip():
            values.append(item["bare"].strip())
        position = item.end()
        if position == len(inner):
            return values
        if inner[position] != ",":
            raise FilterError(f"filter {condition!r}: cannot read the list after 'in'; {_IN_SYNTAX}")
        position += 1


def to_sql(conditions: Iterable[Condition | str], schema: pa.Schema) -> str | None:
    """AND the conditions together; None when there are none."""
    parts = [(parse_condition(c) if isinstance(c, str) else c).to_sql(schema) for c in conditions]
    return " AND ".join(f"({p})" for p in parts) if parts else None


def quote_text(value: str) -> str:
    """A SQL string literal for internal filters built from trusted or validated values."""
    return _quote_text(value)


def _scalar_field(schema: pa.Schema, column: str) -> pa.Field:
    if column not in schema.names:
        scalar = [f.name for f in schema if _is_scalar(f.type)]
        raise FilterError(f"unknown column {column!r} in filter; filterable columns: {', '.join(scalar)}")
    field = schema.field(column)
    if not _is_scalar(field.type):
        raise FilterError(f"column {column!r} holds {field.type}, which cannot be filtered on")
    return field


def _is_scalar(dtype: pa.DataType) -> bool:
    return (pa.types.is_string(dtype) or pa.types.is_integer(dtype) or pa.types.is_floating(dtype)
            or pa.types.is_boolean(dtype) or pa.types.is_timestamp(dtype))


def _quote_text(value: str) -> str:
    if "\x00" in value:
        raise FilterError("filter values may not contain NUL characters")
    return "'" + value.replace("'", "''") + "'"


def _literal(field: pa.Field, value: object) -> str:
    dtype = field.type
    text = str(value)
    try:
        if pa.types.is_integer(dtype):
            return str(int(text))
        if pa.types.is_floating(dtype):
            number = float(text)
            if number != number or number in (float("inf"), float("-inf")):
                raise ValueError
            return repr(number)
        if pa.types.is_boolean(dtype):
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.upper()
        if pa.types.is_timestamp(dtype):
            return f"timestamp {_quote_text(datetime.fromisoformat(text).isoformat())}"
    except ValueError:
        raise FilterError(f"value {text!r} does not fit column {field.name!r} of type {dtype}") from None
    return _quote_text(text)
