"""Where a record came from: the Kafka position of the raw record that completed a message.

Its text form ``<topic>:<partition>:<offset>`` is what message ids are derived from and what the ingest
tables store (``ingest-seen`` entries, closed reassembly headers), so the text form never changes: a
restarted worker reads the entries an older one wrote. Timeouts close messages under synthetic origins
(``timeout|<key>|<first>|t``), which are text only and have no position.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class RecordOrigin:
    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    @classmethod
    def parse(cls, text: str) -> RecordOrigin | None:
        """The origin a stored text stands for; None for a synthetic origin."""
        rest, _, off = text.rpartition(":")
        topic, _, part = rest.rpartition(":")
        if not (topic and part.isdigit() and off.isdigit()):
            return None
        return cls(topic, int(part), int(off))


def is_replay(seen_origin: str, origin: str) -> bool:
    """Is a message completed under ``origin`` the reprocessing of records already handled (after a crash),
    given the stored origin ``seen_origin`` of the copy remembered earlier, rather than new input?

    Within one partition records are processed in offset order, so a record at or before the one that
    completed a message can only be seen again because offsets were not committed before a crash; a
    carrier's retransmission is a new record at a later offset. Synthetic origins match only themselves.
    """
    if seen_origin == origin:
        return True
    seen, current = RecordOrigin.parse(seen_origin), RecordOrigin.parse(origin)
    if seen is None or current is None:
        return False
    return (seen.topic, seen.partition) == (
        current.topic,
        current.partition,
    ) and current.offset <= seen.offset
