"""bench.e2e --request-log: the broker's request log switched on (devkit) and its lines counted (bench)."""

from __future__ import annotations

import json

import pytest
import yaml

from bench.e2e import count_requests, requests_line
from devkit.local.kafka import KAFKA_INFRA, LocalKafka, _with_request_log


def _line(api: str, request: dict, response: dict | None = None) -> str:
    body = {"requestHeader": {"requestApiKeyName": api, "clientId": "rdkafka"}, "request": request}
    body["response"] = response or {}
    return "Completed request:" + json.dumps(body)


def test_requests_are_counted_by_api_and_topic_and_fetches_name_their_topics() -> None:
    lines = [
        _line("METADATA", {}, {"topics": [{"topicId": "AAA", "name": "sms.inbound.v1"}]}),
        _line("PRODUCE", {"topicData": [{"name": "sms.raw.v1", "partitionData": [{"index": 1}]}]}),
        _line("PRODUCE", {"topicData": [{"name": "sms.raw.v1", "partitionData": [{"index": 2}]}]}),
        _line("FETCH", {"topics": [{"topicId": "AAA"}], "maxWaitMs": 500}),
        _line("FETCH", {"topics": [{"topicId": "BBB"}]}),  # not named by any metadata seen: its id
        _line("OFFSET_COMMIT", {"groupId": "g"}),
        "a line that is not a request",
        "Completed request:{not json",
    ]
    names: dict[str, str] = {}
    counts = count_requests(lines, names)
    assert counts == {
        "METADATA": 1,
        "PRODUCE sms.raw.v1": 2,
        "FETCH sms.inbound.v1": 1,
        "FETCH BBB": 1,
        "OFFSET_COMMIT": 1,
    }
    assert names == {"AAA": "sms.inbound.v1"}  # kept for the next scenario's lines
    line = requests_line(counts, delivered=4)
    assert "1.50 in all (6)" in line and "PRODUCE sms.raw.v1 0.50" in line
    assert requests_line(counts, delivered=0).startswith("  broker requests: 6 in all; ")  # idle: counts


def test_fetches_name_topics_whose_metadata_came_before_the_scenario(tmp_path: object) -> None:
    from pathlib import Path

    from bench.e2e import SmsflowSystem

    system = SmsflowSystem(Path(str(tmp_path)), request_log=True)
    system.kafka = LocalKafka(Path(str(tmp_path)) / "kafka", request_log=True)
    log = system.kafka.request_log_path
    log.parent.mkdir(parents=True)
    log.write_text(_line("METADATA", {}, {"topics": [{"topicId": "AAA", "name": "sms.inbound.v1"}]}) + "\n")
    since = system.request_log_offset()
    with log.open("a") as f:
        f.write(_line("FETCH", {"topics": [{"topicId": "AAA"}]}) + "\n")
    assert system.request_counts(since or 0) == {"FETCH sms.inbound.v1": 1}


def test_the_request_log_config_turns_the_request_logger_on_to_its_own_file() -> None:
    config = yaml.safe_load(_with_request_log((KAFKA_INFRA / "log4j2.yaml").read_text()))["Configuration"]
    logger = next(lg for lg in config["Loggers"]["Logger"] if lg["name"] == "kafka.request.logger")
    assert logger["level"] == "DEBUG" and logger["AppenderRef"]["ref"] == "RequestAppender"
    assert config["Appenders"]["File"]["fileName"].endswith("/request.log")
    # everything else as in the file the broker uses normally
    assert config["Loggers"]["Root"]["level"] == "INFO"


def test_a_broker_without_the_option_uses_the_quiet_config(tmp_path: object) -> None:
    from pathlib import Path

    home = Path(str(tmp_path))
    plain = LocalKafka(home / "a")._log_opts()
    assert f"-Dlog4j2.configurationFile={KAFKA_INFRA / 'log4j2.yaml'}" in plain
    logged = LocalKafka(home / "b", request_log=True)
    opts = logged._log_opts()
    written = home / "b" / "log4j2-requests.yaml"
    assert f"-Dlog4j2.configurationFile={written}" in opts and "DEBUG" in written.read_text()
    assert logged.request_log_path.name == "request.log"


def test_a_changed_log_config_is_refused_rather_than_silently_not_logging() -> None:
    from devkit.local.jvm import LocalServiceError

    with pytest.raises(LocalServiceError, match="request logger"):
        _with_request_log("Configuration: {}\n")
