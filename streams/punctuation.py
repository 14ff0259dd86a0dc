"""Punctuation records (ADR 0003): the wall clock, sent to each owned partition of a stage's internal topic,
so scheduled work (timeouts, expiry) runs in the agent that owns the partition's state, in order."""

from __future__ import annotations

import json
import time

import faust


async def punctuate_owned(app: faust.App, topic: faust.TopicT) -> None:
    """One record `{"now": epoch ms}` for each partition of `topic` this worker owns."""
    name = topic.get_topic_name()
    now = json.dumps({"now": int(time.time() * 1000)}).encode()
    for p in [tp.partition for tp in app.assignor.assigned_actives() if tp.topic == name]:
        await topic.send(value=now, partition=p)
