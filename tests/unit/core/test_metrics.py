from prometheus_client import CollectorRegistry, generate_latest

from smsflow.ingest.processor import Stats
from smsflow.metrics import StatsCollector


def test_stage_stats_are_exported_as_counters() -> None:
    stats = Stats(raw=5, messages=3, duplicates=2)
    reg = CollectorRegistry()
    reg.register(StatsCollector("smsflow_ingest", "ingest stage", lambda: stats))
    text = generate_latest(reg).decode()
    assert "smsflow_ingest_messages_total 3.0" in text
    assert "smsflow_ingest_duplicates_total 2.0" in text
    stats.messages += 1
    assert "smsflow_ingest_messages_total 4.0" in generate_latest(reg).decode()
