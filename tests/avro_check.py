"""Does a record encode against one of our Avro contracts? fastavro's validation checks types and
ranges (an int above 2^31 fails), and encoding checks what validation does not (a lone surrogate in a
string cannot be written as UTF-8)."""

from __future__ import annotations

import io
import json
from functools import cache
from typing import Any

import fastavro
from fastavro.validation import validate

from smsflow.schemas import schema_text


@cache
def parsed_schema(filename: str) -> Any:
    return fastavro.parse_schema(json.loads(schema_text(filename)))


def encode(record: dict[str, Any], filename: str) -> bytes:
    """The record's Avro binary encoding; raises when the record does not fit the schema."""
    schema = parsed_schema(filename)
    validate(record, schema, raise_errors=True)
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, record)
    return buffer.getvalue()
