"""The SMPP carrier edge: ESME sessions whose every deliver_sm/data_sm becomes a RawPdu record on Kafka.

Data safety: the SMSC gets ``ESME_ROK`` only after the broker confirmed the write (acks=all, idempotent
producer). If the write fails or times out it gets ``ESME_RX_T_APPN`` (temporary application error) and
retries later, so nothing is acknowledged that is not stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from opentelemetry import context as otel_context
from opentelemetry import trace

from connectors.smpp.probes import Prober, probe_route, probed_routes, returned_probe
from connectors.smpp.route_observer import RouteObserver, carrier_routes
from connectors.smpp.session import EsmeSession, InboundPdu, RejectedPdu, SessionSettings
from smsflow.config import CarrierConfig
from smsflow.ingest.quarantine import quarantine_record
from smsflow.keys import conversation_key_of
from smsflow.logsummary import SummarizedLog
from smsflow.metrics import CONNECTOR_PDUS, CONNECTOR_STORE_SECONDS
from smsflow.numbers.handoff import read_pair
from smsflow.producer import AsyncProducer, KafkaUnavailable
from smsflow.records import RawPdu
from smsflow.routing.model import RoutingSection
from smsflow.routing.observations import CarrierOutcome
from smsflow.schemas import QUARANTINE_TOPIC, RAW_TOPIC
from smsflow.serde import Serde
from smsflow.smpp.address import Address
from smsflow.smpp.constants import CommandStatus, TlvTag
from smsflow.telemetry import headers_from_context, tracer

log = logging.getLogger(__name__)
_floods = SummarizedLog(log)  # per-record lines a flood would repeat (smsflow/logsummary.py)
_tracer = tracer("smsflow.connector.smpp")


@dataclass
class CarrierLink:
    carrier: CarrierConfig
    session: EsmeSession


class SmppConnector:
    def __init__(
        self,
        carriers: list[CarrierConfig],
        producer: AsyncProducer,
        serde: Serde,
        routing: RoutingSection | None = None,
    ) -> None:
        self.producer = producer
        self.serde = serde
        self.links: list[CarrierLink] = []
        routing = routing or RoutingSection()
        self.observer = RouteObserver(
            carrier_routes(routing), producer, serde, report_interval_s=routing.report_interval_s
        )
        self.prober = Prober(
            probed_routes(routing), self.sessions_of, self.observer, interval_s=routing.probe_interval_s
        )
        for carrier in carriers:
            for i in range(carrier.sessions):
                settings = SessionSettings(
                    host=carrier.host,
                    port=carrier.port,
                    system_id=carrier.system_id,
                    password=carrier.password(),
                    system_type=carrier.system_type,
                    bind=carrier.bind,
                    interface_version=carrier.interface_version,
                    address_range=carrier.address_range,
                    enquire_link_s=carrier.enquire_link_s,
                    response_timeout_s=carrier.response_timeout_s,
                    window=carrier.window,
                    reconnect_initial_s=carrier.reconnect.initial_s,
                    reconnect_max_s=carrier.reconnect.max_s,
                    healthy_after_s=carrier.reconnect.healthy_after_s,
                    max_pdu_size=carrier.max_pdu_size,
                    max_messages_per_s=carrier.max_messages_per_s,
                    name=f"{carrier.id}#{i}",
                )
                session = EsmeSession(
                    settings,
                    self._handler_for(carrier),
                    self._rejecter_for(carrier),
                    events=self.observer.events_for(carrier.id),
                )
                self.links.append(CarrierLink(carrier, session))
        self._tasks: list[asyncio.Task[None]] = []

    def sessions_of(self, carrier_id: str) -> list[EsmeSession]:
        return [link.session for link in self.links if link.carrier.id == carrier_id]

    def _handler_for(self, carrier: CarrierConfig):  # type: ignore[no-untyped-def]
        async def handle(item: InboundPdu) -> int:
            probe_id = returned_probe(_message_octets(item))
            if probe_id is not None:
                # our own test SMS back from the carrier: a health figure, never a customer's message
                self.observer.probe_returned(probe_route(probe_id), probe_id, item.received_at_ms)
                status = int(CommandStatus.ESME_ROK)
            else:
                status = await self.store(carrier, item)
            self.observer.count(
                carrier.id,
                CarrierOutcome.OK if status == CommandStatus.ESME_ROK else CarrierOutcome.TEMPORARY_ERROR,
            )
            return status

        return handle

    def _rejecter_for(self, carrier: CarrierConfig):  # type: ignore[no-untyped-def]
        async def reject(item: RejectedPdu) -> None:
            self.observer.count(carrier.id, CarrierOutcome.ERROR)
            await self.quarantine(carrier, item)

        return reject

    async def store(self, carrier: CarrierConfig, item: InboundPdu) -> int:
        p = item.pdu.params
        src, dst = Address.source_of(p), Address.destination_of(p)
        # carriers that send e.g. TON 0 with international numbers: the profile says what they meant, and
        # the record (what ingest normalises and keys by) carries that; the raw PDU stays as received.
        if carrier.source_ton_npi is not None:
            src = src.read_as(carrier.source_ton_npi.ton, carrier.source_ton_npi.npi)
        if carrier.destination_ton_npi is not None:
            dst = dst.read_as(carrier.destination_ton_npi.ton, carrier.destination_ton_npi.npi)
        # The root of the SMS's trace: an SMPP PDU carries no trace context, and an ambient one (if any)
        # would belong to the session, not to this message.
        with _tracer.start_as_current_span(
            f"smpp {item.pdu.name}",
            context=otel_context.Context(),
            kind=trace.SpanKind.SERVER,
            attributes={
                "rpc.system": "smpp",
                "smsflow.carrier": carrier.id,
                "smsflow.route": carrier.route_id,
                "smsflow.session": item.session_id,
                "smpp.sequence_number": item.pdu.sequence_number,
                "smpp.esm_class": int(p.get("esm_class", 0)),
                "smpp.data_coding": int(p.get("data_coding", 0)),
                "smpp.pdu_bytes": len(item.raw),
            },
        ) as span:
            # Read once: for the key, and handed on to the ingest stage (smsflow/numbers/handoff.py).
            src_info, dst_info, numbers = read_pair(
                src.digits, src.ton, dst.digits, dst.ton, carrier.default_region
            )
            record: RawPdu = {
                "carrier_id": carrier.id,
                "route_id": carrier.route_id,
                "session_id": item.session_id,
                "protocol": f"smpp{carrier.interface_version}",
                "received_at": item.received_at_ms,
                "command_id": item.pdu.command_id,
                "sequence_number": item.pdu.sequence_number,
                "source_addr": src.digits,
                "source_addr_ton": src.ton,
                "source_addr_npi": src.npi,
                "destination_addr": dst.digits,
                "dest_addr_ton": dst.ton,
                "dest_addr_npi": dst.npi,
                "esm_class": int(p.get("esm_class", 0)),
                "data_coding": int(p.get("data_coding", 0)),
                "pdu": item.raw,
                "remote_addr": item.remote_addr,
                "numbers": numbers,
            }
            key = conversation_key_of(src_info, dst_info)
            try:
                with _tracer.start_as_current_span(
                    f"send {RAW_TOPIC}",
                    kind=trace.SpanKind.PRODUCER,
                    attributes={
                        "messaging.system": "kafka",
                        "messaging.operation.type": "send",
                        "messaging.destination.name": RAW_TOPIC,
                    },
                ) as send_span:
                    value = self.serde.encode(RAW_TOPIC, record)
                    headers = headers_from_context()
                    stored = await self.producer.send(RAW_TOPIC, value, key=key, headers=headers)
                    send_span.set_attribute("messaging.destination.partition.id", str(stored.partition()))
                    send_span.set_attribute("messaging.kafka.offset", int(stored.offset() or 0))
            except (KafkaUnavailable, OSError, Exception) as exc:  # registry down counts as "not stored" too
                span.set_status(trace.StatusCode.ERROR, str(exc))
                CONNECTOR_PDUS.labels(carrier.id, "temp_error").inc()
                span.set_attribute("smpp.command_status", int(CommandStatus.ESME_RX_T_APPN))
                _floods.log(
                    f"{carrier.id}: PDUs not stored",
                    logging.WARNING,
                    "%s: not stored, answering ESME_RX_T_APPN: %s",
                    carrier.id,
                    exc,
                )
                return int(CommandStatus.ESME_RX_T_APPN)
            span.set_attribute("smpp.command_status", int(CommandStatus.ESME_ROK))
            CONNECTOR_PDUS.labels(carrier.id, "stored").inc()
            CONNECTOR_STORE_SECONDS.observe(max(0.0, time.time() - item.received_at_ms / 1000))
            return int(CommandStatus.ESME_ROK)

    async def quarantine(self, carrier: CarrierConfig, item: RejectedPdu) -> None:
        record = quarantine_record(
            "connector",
            item.reason,
            carrier_id=carrier.id,
            route_id=carrier.route_id,
            session_id=item.session_id,
            received_at=item.received_at_ms,
            status=item.status,
            pdu=item.raw,
        )
        try:
            value = self.serde.encode(QUARANTINE_TOPIC, record)
            await self.producer.send(QUARANTINE_TOPIC, value, key=carrier.id)
        except Exception as exc:
            _floods.log(
                f"{carrier.id}: rejected PDUs not quarantined",
                logging.ERROR,
                "%s: could not quarantine a rejected PDU (%s): %s",
                carrier.id,
                item.reason,
                exc,
            )

    async def start(self) -> None:
        for link in self.links:
            self._tasks.append(asyncio.create_task(link.session.run(), name=link.session.s.name))
        self.observer.start()
        self.prober.start()

    async def wait_bound(self, timeout: float = 30.0) -> None:
        await asyncio.gather(*(link.session.wait_bound(timeout) for link in self.links))

    async def stop(self) -> None:
        started = time.monotonic()
        await self.prober.stop()
        await asyncio.gather(*(link.session.stop() for link in self.links), return_exceptions=True)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.observer.stop()  # the clean unbinds and the last counters, before the producer flush
        await self.producer.flush()
        unbound = sum(link.session.stats.unbind_answered for link in self.links)
        log.info(
            "connector: stopped in %.0f ms; %d unbind(s) answered by the SMSC",
            (time.monotonic() - started) * 1000,
            unbound,
        )


def _message_octets(item: InboundPdu) -> bytes:
    payload = item.pdu.tlv(TlvTag.message_payload)
    if payload is not None:
        return payload
    value = item.pdu.params.get("short_message", b"")
    return value if isinstance(value, bytes) else str(value).encode("latin-1")
