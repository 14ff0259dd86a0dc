"""Avro schema compatibility, by the Avro specification's schema resolution rules.

``reader_problems(reader, writer)`` lists why data written with ``writer`` could not be read with ``reader``
(empty = it can). The registry's compatibility levels are built on it the way Confluent's are:
BACKWARD = the new schema reads data written with the latest one, FORWARD = the latest reads data written
with the new one, FULL = both; the *_TRANSITIVE levels check every earlier version, not only the latest.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import avro.errors
import avro.schema
import fastavro
from fastavro.schema import SchemaParseException, UnknownType

LEVELS = (
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
)
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
# writer type -> reader types that can read it (Avro spec, "Schema Resolution": promotions)
_PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}


class InvalidSchema(ValueError):
    """The text is not a valid Avro schema; the message says why."""


@dataclass(frozen=True)
class AvroSchema:
    """A parsed Avro schema: its text as registered, its identity, and its parsed form for checks."""

    text: str  # compact JSON, field order as submitted
    identity: str  # compact JSON with sorted keys: same identity = same schema, whatever the whitespace
    parsed: Any
    named: dict[str, Any]

    @classmethod
    def parse(cls, text: str) -> AvroSchema:
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise InvalidSchema(f"Invalid schema: not JSON: {exc}") from exc
        named: dict[str, Any] = {}
        try:
            # Two parsers: the reference one (avro) is strict about structure (a record needs fields, …),
            # fastavro checks that defaults match their types and hands us the named types.
            avro.schema.parse(text)
            parsed = fastavro.parse_schema(obj, named_schemas=named)
        except (
            SchemaParseException,
            avro.errors.AvroException,
            UnknownType,
            ValueError,
            TypeError,
            KeyError,
            AttributeError,
        ) as exc:
            raise InvalidSchema(f"Invalid schema {text[:200]}: {exc}") from exc
        return cls(
            text=json.dumps(obj, separators=(",", ":"), ensure_ascii=False),
            identity=json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=False),
            parsed=parsed,
            named=named,
        )


def reader_problems(reader: AvroSchema, writer: AvroSchema) -> list[str]:
    """Why ``reader`` cannot read data written with ``writer``; an empty list when it can."""
    return _Check(reader.named, writer.named).check(reader.parsed, writer.parsed, "")


def compatibility_problems(level: str, new: AvroSchema, earlier: Sequence[AvroSchema]) -> list[str]:
    """Problems registering ``new`` after ``earlier`` (oldest first, live versions only) at ``level``."""
    level = level.upper()
    if level not in LEVELS:
        raise ValueError(f"unknown compatibility level {level!r}")
    if level == "NONE" or not earlier:
        return []
    against = list(earlier) if level.endswith("_TRANSITIVE") else [earlier[-1]]
    backward = level.startswith(("BACKWARD", "FULL"))
    forward = level.startswith(("FORWARD", "FULL"))
    problems: list[str] = []
    for old in against:
        if backward:
            problems += [
                f"new schema cannot read data written with an earlier one: {p}"
                for p in reader_problems(new, old)
            ]
        if forward:
            problems += [
                f"an earlier schema cannot read data written with the new one: {p}"
                for p in reader_problems(old, new)
            ]
    return problems


def _name(node: dict[str, Any]) -> str:
    # Avro compares record/enum/fixed names unqualified (SchemaCompatibility.schemaNameEquals).
    return str(node.get("name", "")).rsplit(".", 1)[-1]


def _kind(node: Any) -> str:
    if isinstance(node, list):
        return "union"
    if isinstance(node, str):
        return node
    return str(node["type"])


class _Check:
    def __init__(self, reader_named: dict[str, Any], writer_named: dict[str, Any]) -> None:
        self.reader_named = reader_named
        self.writer_named = writer_named
        self.in_progress: set[tuple[int, int]] = set()

    def _resolve(self, node: Any, named: dict[str, Any]) -> Any:
        while True:
            if isinstance(node, str) and node in named:
                node = named[node]
            elif isinstance(node, dict) and not isinstance(node.get("type"), str):
                node = node["type"]  # {"type": {...}} or {"type": [...]}
            elif isinstance(node, dict) and node["type"] in _PRIMITIVES:
                return node["type"]  # logical types read as their underlying type
            else:
                return node

    def check(self, reader: Any, writer: Any, path: str) -> list[str]:
        r = self._resolve(reader, self.reader_named)
        w = self._resolve(writer, self.writer_named)
        rk, wk = _kind(r), _kind(w)
        if wk == "union":
            # Any branch may have been written; each must be readable.
            return [p for branch in w for p in self.check(r, branch, path)]
        if rk == "union":
            for branch in r:
                if not self.check(branch, w, path):
                    return []
            return [
                f"at '{path or '/'}': reader union {self._describe(r)} has no branch for writer type {wk}"
            ]
        if rk != wk:
            if rk in _PROMOTIONS.get(wk, ()):
                return []
            return [f"at '{path or '/'}': reader type {rk} cannot read writer type {wk}"]
        if rk in _PRIMITIVES:
            return []
        if rk in ("record", "error", "enum", "fixed") and _name(r) != _name(w):
            aliases = {str(a).rsplit(".", 1)[-1] for a in r.get("aliases", [])}
            if _name(w) not in aliases:
                return [f"at '{path or '/'}': reader {rk} {_name(r)} does not match writer {rk} {_name(w)}"]
        if rk == "array":
            return self.check(r["items"], w["items"], f"{path}/items")
        if rk == "map":
            return self.check(r["values"], w["values"], f"{path}/values")
        if rk == "fixed":
            if r["size"] != w["size"]:
                return [f"at '{path or '/'}': fixed {_name(r)} size {r['size']} != writer size {w['size']}"]
            return []
        if rk == "enum":
            missing = [s for s in w["symbols"] if s not in r["symbols"]]
            if missing and "default" not in r:
                return [
                    f"at '{path or '/'}': enum {_name(r)} lacks writer symbol(s) {missing} and has no default"
                ]
            return []
        return self._check_record(r, w, path)

    def _check_record(self, r: dict[str, Any], w: dict[str, Any], path: str) -> list[str]:
        key = (id(r), id(w))
        if key in self.in_progress:  # recursive type: assume compatible on the way down
            return []
        self.in_progress.add(key)
        try:
            writer_fields = {f["name"]: f for f in w["fields"]}
            problems: list[str] = []
            for field in r["fields"]:
                names = [field["name"], *field.get("aliases", [])]
                wf = next((writer_fields[n] for n in names if n in writer_fields), None)
                fpath = f"{path}/fields/{field['name']}"
                if wf is not None:
                    problems += self.check(field["type"], wf["type"], fpath)
                elif "default" not in field:
                    problems.append(
                        f"at '{fpath}': reader field '{field['name']}' is missing from the writer schema and"
                        " has no default value"
                    )
            return problems
        finally:
            self.in_progress.discard(key)

    @staticmethod
    def _describe(union: list[Any]) -> str:
        return (
            "["
            + ", ".join(b if isinstance(b, str) else str(b.get("name", b.get("type"))) for b in union)
            + "]"
        )
