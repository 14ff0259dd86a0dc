"""Ingest state as plain dicts with Faust-compatible changelogs (ADR 0007, step 1).

The ingest stage keeps two tables, ``ingest-partials`` (reassembly) and ``ingest-seen`` (the dedup window),
each a Faust table today (streams/topology.py) whose every write is a record on
``<app id>-<table>-changelog``, in the partition of the ``sms.raw.v1`` record being processed. ADR 0007
moves the hot path to one confluent-kafka loop per worker; its tables must read and write those same
topics, so a worker of either kind can take over the other's partitions (the migration, and a rollback,
are a rolling restart):

- :class:`ChangelogTable` is the mapping ``IngestProcessor`` reads and writes. It logs every write in order;
  :meth:`ChangelogTable.drain` gives them (``None``: deleted, a tombstone), so the loop produces them after
  the batch's records, in the order Faust would have written them (not one per key per batch: see the class).
- :meth:`ChangelogTable.restore` applies a changelog partition read from its low to its high watermark, as
  Faust's recovery does: the last record of a key wins, a tombstone deletes it.
- Keys and values are encoded as Faust's ``json`` codec writes them (a table's default key and value
  serializer): a key is a JSON string, a value a JSON document. ``tests/unit/ingest/test_tables.py`` checks
  both directions against Faust's own serializers.

Nothing here talks to Kafka: reading a partition and producing the drained writes are the loop's (ADR 0007,
step 2). Until then the worker keeps its Faust tables; this module changes no behaviour.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any

import orjson

INGEST_TABLES = ("ingest-partials", "ingest-seen")  # the worker's table names (streams/topology.py)


class ChangelogError(ValueError):
    """A changelog record this module cannot read (not written by Faust's json codec or by this module)."""


def changelog_topic(app_id: str, table: str) -> str:
    """Faust's changelog topic of a table: ``<app id>-<table>-changelog``."""
    return f"{app_id}-{table}-changelog"


def encode_key(key: str) -> bytes:
    """A table key as Faust's ``json`` codec writes it: a JSON string."""
    if not isinstance(key, str):
        raise TypeError(f"ingest table keys are strings, not {type(key).__name__}")
    return orjson.dumps(key)


def encode_value(value: Any) -> bytes | None:
    """A table value as a JSON document; ``None`` (a deleted key) is a tombstone, as Faust writes it."""
    return None if value is None else orjson.dumps(value)


def decode_key(raw: bytes | None) -> str:
    if raw is None:
        raise ChangelogError("changelog record without a key")
    try:
        key = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ChangelogError(f"changelog key is not JSON: {raw[:64]!r}") from exc
    if not isinstance(key, str):
        raise ChangelogError(f"changelog key is not a JSON string: {raw[:64]!r}")
    return key


def decode_value(raw: bytes | None) -> Any:
    """A changelog value; ``None`` for a tombstone."""
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ChangelogError(f"changelog value is not JSON: {raw[:64]!r}") from exc


class ChangelogTable(MutableMapping[str, Any]):
    """A dict that logs its writes, in order, until :meth:`drain`, with the changelog partition of each.

    ``partition`` is the partition of the record being processed (set by the loop before each record, as
    Faust takes it from the current event): a key's writes go to that partition of the changelog, which is
    co-partitioned with ``sms.raw.v1``. Reads are plain dict reads (the hot path's ``get`` skips
    ``Mapping.get``'s try/except).

    Every write is kept, in the order it was made, as Faust's table writes it (a value is encoded when it
    is written, so a later change to the same object does not rewrite history). The recovery argument of
    docs/consistency.md (Invariant B) needs exactly that: after a crash a changelog partition holds *any
    prefix of the writes*, and the processor's write order makes every prefix a state it can read. Keeping
    only the last value of each key per batch breaks it: a cut inside a batch's writes could hold a message's
    finished header without its parts, and an SMS was lost
    (``test_property_a_crash_inside_a_batchs_changelog_writes_rederives_the_same_ids``). Only consecutive
    writes of one key are merged: no cut can fall between them and show anything but the state before or
    after both."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.partition = 0
        self._log: list[tuple[int, str, bytes | None]] = []  # (changelog partition, key, encoded value)
        self._partition_of: dict[str, int] = {}  # key -> the partition that owns it

    # --- the mapping IngestProcessor uses
    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def __setitem__(self, key: str, value: Any) -> None:
        if value is None:  # None is the tombstone: a stored None could not be told from a deletion
            raise ValueError(f"{key!r}: a table value cannot be None (delete the key instead)")
        encoded = encode_value(value)
        self.data[key] = value
        self._partition_of[key] = self.partition
        self._append(key, encoded)

    def __delitem__(self, key: str) -> None:
        del self.data[key]
        self._partition_of.pop(key, None)
        self._append(key, None)

    def _append(self, key: str, encoded: bytes | None) -> None:
        log = self._log
        if log and log[-1][1] == key and log[-1][0] == self.partition:
            log[-1] = (self.partition, key, encoded)  # the same key again at once: one write
        else:
            log.append((self.partition, key, encoded))

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    # --- the changelog
    @property
    def pending(self) -> int:
        """Writes made since the last :meth:`drain`."""
        return len(self._log)

    def drain(self) -> list[tuple[int, str, Any]]:
        """(partition, key, value as written or None for a deletion) of every write since the last drain, in
        the order they were made."""
        return [(p, k, decode_value(v)) for p, k, v in self._take()]

    def _take(self) -> list[tuple[int, str, bytes | None]]:
        out, self._log = self._log, []
        return out

    def drain_records(self) -> list[tuple[int, bytes, bytes | None]]:
        """:meth:`drain` encoded for the changelog topic: (partition, key, value or None), in write order."""
        return [(p, encode_key(k), v) for p, k, v in self._take()]

    def restore(self, partition: int, records: Iterable[tuple[bytes | None, bytes | None]]) -> int:
        """Apply a changelog partition's records (key, value), oldest first, as Faust's recovery does: the
        last value of a key wins, a tombstone deletes it. Returns the number of records applied. Nothing
        restored is pending: it is already in the changelog."""
        applied = 0
        data, owner = self.data, self._partition_of
        for raw_key, raw_value in records:
            key = decode_key(raw_key)
            value = decode_value(raw_value)
            if value is None:
                data.pop(key, None)
                owner.pop(key, None)
            else:
                data[key] = value
                owner[key] = partition
            applied += 1
        return applied

    def forget_partition(self, partition: int) -> int:
        """Drop the keys of a partition this process no longer owns (revoked after its last commit, or lost)
        and their pending writes (a lost partition's batch is not committed: its new owner replays it).
        Returns the number of keys dropped."""
        gone = [k for k, p in self._partition_of.items() if p == partition]
        for k in gone:
            del self._partition_of[k]
            self.data.pop(k, None)
        self._log = [w for w in self._log if w[0] != partition]
        return len(gone)
