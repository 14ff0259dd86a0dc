"""The connector's observations of its carrier routes (issue 11): bind events, probes, traffic counters.

The SMPP side is the real simulator over TCP; only Kafka is replaced, by a recorder of what the connector
would write (the broker-backed proof is tests/e2e/test_double_list.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from connectors.smpp.connector import SmppConnector
from devkit.simulator.faults import parse_fault
from devkit.simulator.smsc import SimulatedSmsc
from devkit.simulator.traffic import LogicalSms
from smsflow.config import parse_config
from smsflow.routing.observations import observations_of
from smsflow.schemas import RAW_TOPIC, ROUTE_OBSERVATIONS_TOPIC

TEST_NUMBER = "+85230009999"


class RecordingProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any, dict[str, Any]]] = []

    async def send(self, topic: str, value: bytes, key: Any = None, **_: Any) -> Any:
        self.sent.append((topic, key, orjson.loads(value)))

        class Stored:
            def partition(self) -> int:
                return 0

            def offset(self) -> int:
                return len(self_.sent)

        self_ = self
        return Stored()

    async def flush(self, timeout: float = 10.0) -> int:
        return 0

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [v for t, _, v in self.sent if t == topic]


class JsonSerde:
    def encode(self, topic: str, record: dict[str, Any]) -> bytes:
        return orjson.dumps(record, default=lambda v: v.decode("latin-1"))


def connector_config(port: int) -> Any:
    return parse_config(
        {
            "carriers": [
                {
                    "id": f"carrier-{n}",
                    "route_id": f"route-{n}",
                    "host": "127.0.0.1",
                    "port": port,
                    "system_id": n,
                    "password_env": "UNIT_SMPP_PASSWORD",
                    "enquire_link_s": 0.3,
                    "reconnect": {"initial_s": 0.1, "max_s": 0.2},
                }
                for n in ("alpha", "beta")
            ],
            "routing": {
                "report_interval_s": 0.2,
                "probe_interval_s": 0.3,
                "routes": [
                    {
                        "id": "hk-a",
                        "kind": "carrier",
                        "carrier": "carrier-alpha",
                        "pool": ["+8526"],
                        "test_numbers": [TEST_NUMBER],
                    },
                    {"id": "hk-b", "kind": "carrier", "carrier": "carrier-beta", "pool": ["+8526"]},
                ],
            },
        }
    )


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@pytest.fixture
def password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIT_SMPP_PASSWORD", "pw")


async def test_binds_probes_and_traffic_become_route_observations(password: None) -> None:
    smsc = SimulatedSmsc(
        {"alpha": "pw", "beta": "pw"}, retry_delay_s=0.1, test_numbers=[TEST_NUMBER], probe_latency_s=0.05
    )
    port = await smsc.start()
    producer = RecordingProducer()
    cfg = connector_config(port)
    connector = SmppConnector(cfg.carriers, producer, JsonSerde(), cfg.routing)  # type: ignore[arg-type]
    await connector.start()
    try:
        await connector.wait_bound(10)
        obs = lambda: producer.on(ROUTE_OBSERVATIONS_TOPIC)  # noqa: E731
        await until(lambda: any(o["kind"] == "probe_returned" for o in obs()))
        for i in range(3):
            smsc.enqueue(LogicalSms("+85260001234", "+85260009999", f"hello {i}", 0), account="beta")
        await until(lambda: sum(o["ok"] for o in obs() if o["route_id"] == "hk-b") >= 3)

        # a refused bind is a failure of the route that has it, and only of that one
        smsc.set_fault("beta", parse_fault({"kind": "refuse_binds"}, now=time.monotonic()))
        smsc.drop_now("beta")
        await until(lambda: any(o["kind"] == "bind_refused" and o["route_id"] == "hk-b" for o in obs()))
    finally:
        await connector.stop()
        await smsc.stop()

    records = producer.on(ROUTE_OBSERVATIONS_TOPIC)
    kinds = {(o["route_id"], o["kind"]) for o in records}
    assert {("hk-a", "session_bound"), ("hk-b", "session_bound"), ("hk-b", "session_lost")} <= kinds
    assert ("hk-a", "probe_sent") in kinds and ("hk-a", "probe_returned") in kinds
    assert not any(
        o["kind"].startswith("probe") for o in records if o["route_id"] == "hk-b"
    )  # no test number
    lost = [o for o in records if o["kind"] == "session_lost" and o["route_id"] == "hk-b"]
    assert not lost[0]["clean"]  # dropped by the carrier: a failure; our own stop later is clean
    # the customer SMS were stored; the probes were not (they never reach ingest nor a customer)
    raw = producer.on(RAW_TOPIC)
    assert len(raw) == 3
    assert not any("smsflow-probe:" in r["pdu"] for r in raw)
    # traffic is reported as counters per interval, never a record per SMS
    traffic = [o for o in records if o["kind"] == "traffic" and o["route_id"] == "hk-b"]
    assert sum(o["ok"] for o in traffic) == 3
    assert sum(len(observations_of(o)) for o in traffic) == 3
