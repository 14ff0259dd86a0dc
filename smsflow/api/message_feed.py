"""Feed the API's `OutboundDesk` from Kafka: requests (owners, idempotency keys) and status transitions.

Both topics are read whole at start and then followed (`CompactedFollower`, a consumer that never commits),
so a restarted API, or another replica, knows every message's owner, every Idempotency-Key of the window and
every status. The topics are not compacted: at start the read costs their retention (sms.outbound.v1 7 d,
sms.outbound.status.v1 30 d); a deployment with much traffic would seek sms.outbound.v1 by time (24 h is
all the keys need) and answer GET from a store.
"""

from __future__ import annotations

from confluent_kafka import Message

from smsflow.api.messages import OutboundDesk
from smsflow.compacted import CompactedFollower
from smsflow.schemas import OUTBOUND_STATUS_TOPIC, OUTBOUND_TOPIC
from smsflow.serde import Serde


class OutboundFeed:
    def __init__(self, bootstrap: str, serde: Serde, desk: OutboundDesk) -> None:
        self.serde = serde
        self.desk = desk
        self._follower = CompactedFollower(
            bootstrap, (OUTBOUND_TOPIC, OUTBOUND_STATUS_TOPIC), self._on_record, "api-messages"
        )

    async def start(self, timeout: float = 60.0) -> None:
        await self._follower.start(timeout)

    async def stop(self) -> None:
        await self._follower.stop()

    def _on_record(self, msg: Message) -> None:
        value = msg.value()
        if value is None:
            return
        record = self.serde.decode(msg.topic() or "", value)
        if msg.topic() == OUTBOUND_TOPIC:
            self.desk.on_request(record)
        else:
            self.desk.on_status(record)
