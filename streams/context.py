"""What the stages of one worker share: its config and clients, and the collaborators one part of the worker
sets up for another (typed fields, so a reader sees who provides what)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from smsflow.config import Config
from smsflow.serde import Serde

if TYPE_CHECKING:
    from smsflow.delivery.callbacks import CallbackSigner
    from smsflow.delivery.failover import ActiveList
    from smsflow.ingest.processor import IngestProcessor
    from smsflow.routing.model import RoutingSection
    from smsflow.subscriptions.store import SubscriptionStore
    from streams.deliver import KafkaDelivery
    from streams.inbound_reader import InboundReader
    from streams.liveness import Liveness


@dataclass
class StreamContext:
    config: Config
    bootstrap: str
    serde: Serde
    partitions: int  # of sms.raw.v1 on the cluster: ingest tables and punctuation are co-partitioned with it
    roles: set[str] = field(default_factory=lambda: {"ingest", "deliver", "routes", "outbound"})
    # set once the subscriptions table is loaded: no message is matched against a half-read table
    subscriptions_ready: asyncio.Event = field(default_factory=asyncio.Event)
    # the worker's subscriptions (delivery, and the double-list stage's subscription policies), when it
    # runs a stage that needs them; loaded once subscriptions_ready is set
    subscriptions: SubscriptionStore | None = None
    # the worker's readiness and watchdog (streams/liveness.py), when the worker process runs one
    liveness: Liveness | None = None
    # the ingest stage's processor, set by the topology (its stats are exported as metrics)
    ingest: IngestProcessor | None = None
    # the delivery stage's Kafka side, set by the worker once its sender, store and policy exist
    delivery: KafkaDelivery | None = None
    # reads sms.inbound.v1 for the deliver stage when worker.inbound_reader is 'direct' (set by the topology)
    inbound_reader: InboundReader | None = None
    # signs outbound status callbacks with their owner's secret, set by the worker with the delivery stage
    callbacks: CallbackSigner | None = None
    # the double list's latest decision per carrier scope (sms.routes.decisions.v1), for outbound route
    # choice; filled by the outbound stage (streams/outbound.py, FollowedRouteStates); a scope not in it is
    # on its primary list
    route_states: dict[str, ActiveList] = field(default_factory=dict)
    # the routing section outbound chooses by: the config's policies with the API's (sms.routes.policies.v1)
    # merged in, kept current by the outbound stage; None: the config's section as it is
    routing: RoutingSection | None = None
    # Tasks that load state read whole from compacted topics (subscriptions, attempts ledger, circuits, route
    # decisions): started with the app, while it joins its group and recovers its tables, not after recovery
    # as Faust's ``app.task`` is. After a crash every message waits for both; run in series they added
    # seconds on a loaded machine (docs/consistency.md, "Recovery timeline").
    loading_tasks: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
