"""``smsflow``: one entry point, a subcommand per process role and per operation."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from smsflow import event_loop
from smsflow.config import Config, ConfigError, load_config

app = typer.Typer(
    help="smsflow: Kafka-native SMS reception. Carriers -> Kafka -> Faust -> signed customer webhooks.",
    no_args_is_help=True,
    add_completion=False,
)

ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="YAML config file", exists=True, dir_okay=False)
]
DEFAULT_DEMO = Path(__file__).resolve().parent.parent / "config" / "demo.yaml"


@contextlib.contextmanager
def _config_errors_exit() -> Iterator[None]:
    """A bad config is the operator's to fix: print the field and why, exit 2, no traceback."""
    try:
        yield
    except ConfigError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def _load(path: Path) -> Config:
    with _config_errors_exit():
        return load_config(path)


@app.command()
def run(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="YAML config (carriers are simulated)")
    ] = DEFAULT_DEMO,
    rate: Annotated[float, typer.Option(help="simulated inbound SMS per second")] = 20.0,
    duration: Annotated[float, typer.Option(help="seconds to run; 0 = until Ctrl-C")] = 0.0,
    multipart: Annotated[float, typer.Option(help="share of long (multipart) SMS")] = 0.2,
    duplicates: Annotated[float, typer.Option(help="share of PDUs the carrier retransmits")] = 0.05,
    workdir: Annotated[Path, typer.Option(help="where local services keep data and logs")] = Path(
        ".work/run"
    ),
    zipkin: Annotated[bool, typer.Option(help="start a local Zipkin tracing UI")] = True,
    primary_fault: Annotated[
        str | None,
        typer.Option(
            help="break the primary carrier: refuse_binds | drop | silent | probe_latency | probe_loss"
        ),
    ] = None,
    fault_after: Annotated[float, typer.Option(help="seconds of traffic before --primary-fault")] = 60.0,
    fault_for: Annotated[float, typer.Option(help="how long the fault holds (0 = until the end)")] = 120.0,
) -> None:
    """Run the whole pipeline locally, with a simulated carrier and a demo webhook. The table shows each
    route's health and each scope's double-list state; --primary-fault breaks the primary carrier on cue.
    On a terminal, the f key cycles a fault on the primary carrier (refuse binds, probe latency, clear)
    and q quits."""
    from devkit.demo.pipeline import DemoOptions, run_demo
    from devkit.demo.route_view import DEMO_FAULTS

    cfg = _load(config)
    opts = DemoOptions(
        rate=rate,
        duration=duration,
        multipart_ratio=multipart,
        dup_ratio=duplicates,
        workdir=workdir,
        zipkin=zipkin,
        primary_fault=primary_fault,
        fault_after_s=fault_after,
        fault_for_s=fault_for or None,
    )
    if primary_fault is not None and primary_fault not in DEMO_FAULTS:
        known = ", ".join(DEMO_FAULTS)
        raise typer.BadParameter(
            f"unknown fault {primary_fault!r} (known: {known})", param_hint="--primary-fault"
        )
    sys.exit(asyncio.run(run_demo(cfg, config, opts)))


@app.command()
def worker(
    config: ConfigOpt,
    stage: Annotated[
        list[str] | None,
        typer.Option(
            help="ingest, deliver, routes and/or outbound (default all; routes runs when the config has "
            "routing policies or routing.subscription_lists)"
        ),
    ] = None,
    loglevel: str = "warning",
) -> None:
    """Faust worker running the stream stages (ingest: raw -> inbound; deliver: inbound -> webhooks; routes:
    route health -> double-list decisions; outbound: requests -> submissions, ledger -> statuses, receipts ->
    segments)."""
    from smsflow.roles import WORKER_STAGES, run_worker

    cfg = _load(config)
    roles = set(stage or WORKER_STAGES)
    bad = roles - set(WORKER_STAGES)
    if bad:
        raise typer.BadParameter(f"unknown stage(s): {', '.join(sorted(bad))}", param_hint="--stage")
    # Faust's Worker parses sys.argv; give it none of ours.
    sys.argv = [sys.argv[0]]
    with _config_errors_exit():
        run_worker(cfg, roles, loglevel)


@app.command()
def ingest(
    config: ConfigOpt,
    batch_max: Annotated[
        int,
        typer.Option(
            min=1,
            max=10_000,
            help="most raw records taken per batch (waits for more only while busy: worker.ingest_gather_ms)",
        ),
    ] = 500,
    loglevel: str = "warning",
) -> None:
    """The direct ingest loop (docs/adr/0007-direct-kafka-hot-loop.md): sms.raw.v1 -> sms.inbound.v1,
    receipts, quarantine on one confluent-kafka consumer and producer, without Faust. Run the workers beside
    it without their ingest stage: smsflow worker --stage deliver --stage routes --stage outbound."""
    from smsflow.roles import run_ingest_loop

    cfg = _load(config)
    with _config_errors_exit():
        code = run_ingest_loop(cfg, batch_max, loglevel)
    raise typer.Exit(code)


@app.command()
def connector(config: ConfigOpt, loglevel: str = "info") -> None:
    """Carrier connector: SMPP sessions storing every deliver_sm in sms.raw.v1 before acknowledging it."""
    from smsflow.roles import configure_logging, run_connector

    configure_logging(loglevel)
    cfg = _load(config)
    with _config_errors_exit():
        for carrier in cfg.carriers:  # a password the bind cannot carry: refuse before touching Kafka
            carrier.password()
        event_loop.run(run_connector(cfg), cfg.event_loop)


@app.command()
def api(config: ConfigOpt, loglevel: str = "info") -> None:
    """Subscriptions REST API (create, change, rotate secrets, resend, recover); OpenAPI at /openapi.json."""
    from smsflow.roles import configure_logging, run_api

    configure_logging(loglevel)
    cfg = _load(config)
    with _config_errors_exit():
        asyncio.run(run_api(cfg))


simulator_app = typer.Typer(
    help="A simulated carrier SMSC pushing seed-style OTP traffic (+852/+86 senders) to whoever binds; "
    "`smsflow simulator fault ...` injects faults into a running one through its control port.",
)
app.add_typer(simulator_app, name="simulator")


@simulator_app.callback(invoke_without_command=True)
def simulator(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="SMPP port to listen on")] = 2775,
    system_id: Annotated[str, typer.Option(help="account the ESME binds with")] = "smsflow",
    password_env: Annotated[
        str, typer.Option(help="env var with the bind password")
    ] = "SMSFLOW_SIM_PASSWORD",
    rate: Annotated[float, typer.Option(help="deliver_sm per second (logical SMS); 0 = none")] = 10.0,
    count: Annotated[int, typer.Option(help="stop after this many SMS; 0 = endless")] = 0,
    multipart: float = 0.2,
    duplicates: float = 0.0,
    seed: int = 1,
    control_port: Annotated[
        int | None, typer.Option(help="serve the HTTP control endpoint on 127.0.0.1:PORT (0 = any free port)")
    ] = None,
    test_number: Annotated[
        list[str] | None, typer.Option(help="a probe test number: submits to it come back as MOs (repeat)")
    ] = None,
    probe_latency: Annotated[float, typer.Option(help="seconds before a probe comes back")] = 1.0,
    receipts: Annotated[
        bool, typer.Option(help="a DELIVRD receipt for each submit that asks for one")
    ] = False,
    message_id_format: Annotated[
        str, typer.Option(help="submit_sm_resp message ids: hex or decimal")
    ] = "hex",
) -> None:
    """Run the simulated carrier (unless a subcommand is given)."""
    if ctx.invoked_subcommand is not None:
        return
    from devkit.demo.feed import run_simulator

    password = os.environ.get(password_env)
    if password is None:
        raise typer.BadParameter(
            f"environment variable {password_env} is not set", param_hint="--password-env"
        )
    if message_id_format not in ("hex", "decimal"):
        raise typer.BadParameter("must be hex or decimal", param_hint="--message-id-format")
    asyncio.run(
        run_simulator(
            port,
            system_id,
            password,
            rate,
            count,
            multipart,
            duplicates,
            seed,
            test_numbers=tuple(test_number or ()),
            probe_latency_s=probe_latency,
            receipts=receipts,
            message_id_format="hex" if message_id_format == "hex" else "decimal",
            control_port=control_port,
        )
    )


fault_app = typer.Typer(
    help="Faults of a running `smsflow simulator --control-port ...`, per account (docs/simulator.md).",
    no_args_is_help=True,
)
simulator_app.add_typer(fault_app, name="fault")

ControlOpt = Annotated[
    str,
    typer.Option("--control", envvar="SMSFLOW_SIM_CONTROL", help="base URL of the simulator's control port"),
]
DEFAULT_CONTROL = "http://127.0.0.1:2776"


def _control_call(call, *args) -> None:  # type: ignore[no-untyped-def]
    import orjson

    from devkit.simulator.control import ControlCallError

    try:
        out = call(*args)
    except ControlCallError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    typer.echo(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())


@fault_app.command("set")
def fault_set(
    kind: Annotated[
        str,
        typer.Argument(
            help="refuse_binds | drop | deliver_latency | probe_latency | submit_errors | throttle | "
            "silent | probe_loss"
        ),
    ],
    account: Annotated[str, typer.Option(help="the account (system_id) that suffers it")],
    status: Annotated[
        str | None, typer.Option(help="command_status for refuse_binds/submit_errors, e.g. ESME_RMSGQFUL")
    ] = None,
    ratio: Annotated[float | None, typer.Option(help="share affected (submit_errors, probe_loss)")] = None,
    latency_ms: Annotated[
        float | None, typer.Option(help="added delay (deliver_latency, probe_latency)")
    ] = None,
    every: Annotated[float | None, typer.Option(help="drop: each connection every N s (none = now)")] = None,
    tps: Annotated[float | None, typer.Option(help="throttle: messages per second")] = None,
    duration: Annotated[float | None, typer.Option(help="seconds until it lifts by itself")] = None,
    control: ControlOpt = DEFAULT_CONTROL,
) -> None:
    """Put a fault on an account (replaces one of the same kind); the simulator checks the fields."""
    from devkit.simulator.control import ControlClient

    given = {
        "status": status,
        "ratio": ratio,
        "latency_ms": latency_ms,
        "every_s": every,
        "tps": tps,
        "duration_s": duration,
    }
    body: dict[str, object] = {"kind": kind} | {k: v for k, v in given.items() if v is not None}
    _control_call(ControlClient(control).set_fault, account, body)


@fault_app.command("clear")
def fault_clear(
    account: Annotated[str, typer.Option(help="the account (system_id)")],
    kind: Annotated[str | None, typer.Argument(help="the fault to lift; none = all of the account's")] = None,
    control: ControlOpt = DEFAULT_CONTROL,
) -> None:
    """Lift one fault, or every fault, of an account."""
    from devkit.simulator.control import ControlClient

    _control_call(ControlClient(control).clear, account, kind)


@fault_app.command("list")
def fault_list(
    account: Annotated[str | None, typer.Option(help="only this account's faults")] = None,
    control: ControlOpt = DEFAULT_CONTROL,
) -> None:
    """Show the faults in force (with an account) or the whole simulator state (binds, queues, probes)."""
    from devkit.simulator.control import ControlClient

    client = ControlClient(control)
    if account:
        _control_call(client.faults, account)
    else:
        _control_call(client.state)


@app.command()
def receiver(
    port: Annotated[int, typer.Option()] = 8088,
    secret_env: Annotated[
        str, typer.Option(help="env var with the whsec_ secret")
    ] = "SMSFLOW_DEMO_WEBHOOK_SECRET",
) -> None:
    """A demo customer webhook that verifies Standard Webhooks signatures and prints what arrives."""
    from devkit.demo.feed import run_receiver

    secret = os.environ.get(secret_env)
    if secret is None:
        raise typer.BadParameter(f"environment variable {secret_env} is not set", param_hint="--secret-env")
    asyncio.run(run_receiver(port, secret))


@app.command()
def registry(
    bootstrap: Annotated[str, typer.Option(envvar="KAFKA_BOOTSTRAP_SERVERS")],
    port: int = 8081,
    host: str = "127.0.0.1",
) -> None:
    """The embedded Confluent-compatible schema registry (schemas kept in the compacted _schemas topic)."""
    from devkit.registry.__main__ import main as registry_main

    registry_main(["--bootstrap", bootstrap, "--port", str(port), "--host", host])


@app.command()
def diagnose(
    capture: Annotated[
        str,
        typer.Argument(help="PDU hex, or @FILE with hex or a quarantine record (JSON, pdu in hex/base64)"),
    ],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config, to compare")] = None,
    carrier: Annotated[
        str | None, typer.Option(help="carrier id in --config whose profile to compare")
    ] = None,
) -> None:
    """Decode a captured PDU under each candidate carrier setting and say which reading makes sense."""
    from smsflow.carriers import alphabet_overrides
    from smsflow.diagnose import diagnose as run_diagnosis
    from smsflow.diagnose import read_capture

    text = Path(capture[1:]).read_text(encoding="utf-8") if capture.startswith("@") else capture
    try:
        raw, reason = read_capture(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="CAPTURE") from None
    current: dict[int, str] | None = None
    if config is not None:
        cfg = _load(config)
        chosen = [c for c in cfg.carriers if carrier is None or c.id == carrier]
        if not chosen:
            raise typer.BadParameter(f"no carrier {carrier!r} in {config}", param_hint="--carrier")
        current = alphabet_overrides(chosen[0].data_coding, chosen[0].gsm_default_alphabet)
    typer.echo(run_diagnosis(raw, reason, current).render())


topics_app = typer.Typer(help="Kafka topics from infra/topics.yaml")
app.add_typer(topics_app, name="topics")


@topics_app.command("apply")
def topics_apply(
    bootstrap: Annotated[str, typer.Option(envvar="KAFKA_BOOTSTRAP_SERVERS")],
    manifest: Annotated[Path | None, typer.Option(help="topics manifest")] = None,
) -> None:
    """Create every topic of the manifest that does not exist yet (idempotent)."""
    from smsflow.topics import ensure_topics, load_manifest

    created = ensure_topics(bootstrap, load_manifest(manifest) if manifest else load_manifest())
    typer.echo(f"created: {', '.join(created) if created else 'nothing (all present)'}")


kafka_app = typer.Typer(help="the local single-node Kafka broker (KRaft) from Maven Central jars")
app.add_typer(kafka_app, name="kafka")


@kafka_app.command("start")
def kafka_start(home: Path = Path(".work/kafka"), port: int = 9092) -> None:
    """Fetch (once), format (once) and start a local broker; prints its bootstrap address."""
    from devkit.local.kafka import LocalKafka

    k = LocalKafka(home, port=port, die_with_parent=False)
    k.fetch()
    k.start()
    k.wait_ready()
    typer.echo(k.bootstrap)


@kafka_app.command("stop")
def kafka_stop(home: Path = Path(".work/kafka")) -> None:
    from devkit.local.kafka import LocalKafka

    LocalKafka(home).stop()


subs_app = typer.Typer(
    help="Manage webhook subscriptions through the REST API of a running `smsflow api`. "
    "The API key is read from the environment variable named by --key-env (default SMSFLOW_API_KEY).",
    no_args_is_help=True,
)
app.add_typer(subs_app, name="subscriptions")

ApiUrlOpt = Annotated[
    str, typer.Option("--api-url", envvar="SMSFLOW_API_URL", help="base URL of `smsflow api`")
]
KeyEnvOpt = Annotated[str, typer.Option("--key-env", help="environment variable holding the API key")]
DEFAULT_API_URL = "http://127.0.0.1:8090"


def _client(api_url: str, key_env: str):  # type: ignore[no-untyped-def]
    from smsflow.api.client import ApiCallError, SubscriptionsClient

    try:
        return SubscriptionsClient.from_env(api_url, key_env)
    except ApiCallError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def _show(call, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
    import orjson

    from smsflow.api.client import ApiCallError

    try:
        out = call(*args, **kwargs)
    except ApiCallError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    if out is not None:
        typer.echo(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())


@subs_app.command("list")
def subscriptions_list(
    owner: Annotated[str | None, typer.Option(help="only this owner's (operator keys)")] = None,
    api_url: ApiUrlOpt = DEFAULT_API_URL,
    key_env: KeyEnvOpt = "SMSFLOW_API_KEY",
) -> None:
    """List subscriptions (secrets appear only as fingerprints)."""
    _show(_client(api_url, key_env).list, owner)


@subs_app.command("get")
def subscriptions_get(
    subscription_id: str, api_url: ApiUrlOpt = DEFAULT_API_URL, key_env: KeyEnvOpt = "SMSFLOW_API_KEY"
) -> None:
    """Show one subscription."""
    _show(_client(api_url, key_env).get, subscription_id)


@subs_app.command("create")
def subscriptions_create(
    url: Annotated[str, typer.Option(help="the customer's webhook URL")],
    owner: Annotated[str | None, typer.Option(help="owning customer (required with an operator key)")] = None,
    destination: Annotated[list[str] | None, typer.Option(help="exact destination number (repeat)")] = None,
    prefix: Annotated[list[str] | None, typer.Option(help="destination number prefix (repeat)")] = None,
    country: Annotated[list[str] | None, typer.Option(help="ISO country code of the number (repeat)")] = None,
    otp_only: Annotated[bool, typer.Option(help="only messages with an OTP code")] = False,
    signature: Annotated[
        list[str] | None, typer.Option(help="sender signature, e.g. 【京东】 (repeat)")
    ] = None,
    route: Annotated[list[str] | None, typer.Option(help="route id (repeat)")] = None,
    description: str = "",
    max_in_flight: Annotated[int, typer.Option(help="concurrent requests to the endpoint")] = 10,
    rate_limit: Annotated[float | None, typer.Option(help="requests per second, at most")] = None,
    timeout: Annotated[float, typer.Option(help="request timeout in seconds")] = 10.0,
    batch_size: Annotated[int | None, typer.Option(help="send arrays of up to this many messages")] = None,
    batch_wait_ms: Annotated[int, typer.Option(help="longest wait to fill a batch")] = 1000,
    primary: Annotated[
        list[str] | None,
        typer.Option(help="[ID=]URL: another endpoint on the primary list, after --url (repeat)"),
    ] = None,
    secondary: Annotated[
        list[str] | None, typer.Option(help="[ID=]URL: an endpoint on the secondary list (repeat)")
    ] = None,
    api_url: ApiUrlOpt = DEFAULT_API_URL,
    key_env: KeyEnvOpt = "SMSFLOW_API_KEY",
) -> None:
    """Create a subscription. The answer shows its signing secrets (of --url and of each endpoint), once."""
    body: dict[str, object] = {
        "url": url,
        "description": description,
        "filters": {
            "destination_numbers": destination or [],
            "destination_prefixes": prefix or [],
            "countries": country or [],
            "otp_only": otp_only,
            "sender_signatures": signature or [],
            "route_ids": route or [],
        },
        "max_in_flight": max_in_flight,
        "timeout_seconds": timeout,
    }
    if owner:
        body["owner"] = owner
    if rate_limit is not None:
        body["rate_limit_per_second"] = rate_limit
    if batch_size is not None:
        body["batch"] = {"max_batch_size": batch_size, "max_wait_ms": batch_wait_ms}
    endpoints = _endpoints("primary", primary or []) + _endpoints("secondary", secondary or [])
    if endpoints:
        body["endpoints"] = endpoints
    _show(_client(api_url, key_env).create, body)


def _endpoints(role: str, given: list[str]) -> list[dict[str, str]]:
    """``[ID=]URL`` options as API endpoints; without an id, ``p1``, ``p2``… / ``s1``, ``s2``…"""
    out = []
    for i, text in enumerate(given, start=1):
        head, sep, tail = text.partition("=")
        named = sep and "://" not in head
        out.append({"id": head if named else f"{role[0]}{i}", "role": role, "url": tail if named else text})
    return out


@subs_app.command("delete")
def subscriptions_delete(
    subscription_id: str, api_url: ApiUrlOpt = DEFAULT_API_URL, key_env: KeyEnvOpt = "SMSFLOW_API_KEY"
) -> None:
    """Delete a subscription (its pending retries are dead-lettered when due)."""
    _show(_client(api_url, key_env).delete, subscription_id)
    typer.echo(f"deleted {subscription_id}")


@subs_app.command("rotate-secret")
def subscriptions_rotate_secret(
    subscription_id: str,
    overlap: Annotated[
        float | None, typer.Option(help="seconds the old secret keeps signing (default: the API's)")
    ] = None,
    endpoint: Annotated[str | None, typer.Option(help="an endpoint's id (default: the --url one)")] = None,
    api_url: ApiUrlOpt = DEFAULT_API_URL,
    key_env: KeyEnvOpt = "SMSFLOW_API_KEY",
) -> None:
    """Make a new signing secret (shown once); the old one keeps signing during the overlap."""
    _show(_client(api_url, key_env).rotate_secret, subscription_id, overlap, endpoint)


@subs_app.command("enable")
def subscriptions_enable(
    subscription_id: str, api_url: ApiUrlOpt = DEFAULT_API_URL, key_env: KeyEnvOpt = "SMSFLOW_API_KEY"
) -> None:
    """Enable a subscription (e.g. after it was disabled by a 410 or sustained failure)."""
    _show(_client(api_url, key_env).enable, subscription_id)


@subs_app.command("disable")
def subscriptions_disable(
    subscription_id: str,
    reason: Annotated[str | None, typer.Option(help="why, shown as disabled_reason")] = None,
    api_url: ApiUrlOpt = DEFAULT_API_URL,
    key_env: KeyEnvOpt = "SMSFLOW_API_KEY",
) -> None:
    """Disable a subscription: nothing is sent to it until it is enabled."""
    _show(_client(api_url, key_env).disable, subscription_id, reason)


@subs_app.command("resend")
def subscriptions_resend(
    message_id: str,
    subscription: Annotated[str, typer.Option("--subscription", "-s", help="subscription id")],
    api_url: ApiUrlOpt = DEFAULT_API_URL,
    key_env: KeyEnvOpt = "SMSFLOW_API_KEY",
) -> None:
    """Send one stored message to a subscription again (same webhook-id)."""
    _show(_client(api_url, key_env).resend, message_id, subscription)


@subs_app.command("recover")
def subscriptions_recover(
    subscription_id: str,
    since: Annotated[str, typer.Option(help="ISO time with zone, e.g. 2026-01-31T08:00:00Z")],
    api_url: ApiUrlOpt = DEFAULT_API_URL,
    key_env: KeyEnvOpt = "SMSFLOW_API_KEY",
) -> None:
    """Queue again every matching message since a time that was not delivered to this subscription."""
    _show(_client(api_url, key_env).recover, subscription_id, since)


holdings_app = typer.Typer(
    help="What each customer holds (numbers, number prefixes, routes), through `smsflow api`. Every "
    "subscription filter is bounded by its owner's holding; changing holdings needs an admin key.",
    no_args_is_help=True,
)
app.add_typer(holdings_app, name="holdings")


@holdings_app.command("list")
def holdings_list(api_url: ApiUrlOpt = DEFAULT_API_URL, key_env: KeyEnvOpt = "SMSFLOW_API_KEY") -> None:
    """List holdings (an owner key sees only its own)."""
    _show(_client(api_url, key_env).holdings)


@holdings_app.command("get")
def holdings_get(
    owner: str, api_url: ApiUrlOpt = DEFAULT_API_URL, key_env: KeyEnvOpt = "SMSFLOW_API_KEY"
) -> None:
    """Show what one owner holds."""
    _show(_client(api_url, key_env).holding, owner)


@holdings_app.command("set")
def holdings_set(
    owner: str,
    number: Annotated[list[str] | None, typer.Option(help="E.164 number the owner holds (repeat)")] = None,
    prefix: Annotated[list[str] | None, typer.Option(help="E.164 prefix the owner holds (repeat)")] = None,
    route: Annotated[list[str] | None, typer.Option(help="route dedicated to the owner (repeat)")] = None,
    sender_id: Annotated[
        list[str] | None, typer.Option(help="alphanumeric sender the owner may send as (repeat)")
    ] = None,
    api_url: ApiUrlOpt = DEFAULT_API_URL,
    key_env: KeyEnvOpt = "SMSFLOW_API_KEY",
) -> None:
    """Replace what an owner holds (admin key). Takes effect for delivery at once, retries included."""
    body = {
        "numbers": number or [],
        "prefixes": prefix or [],
        "route_ids": route or [],
        "sender_ids": sender_id or [],
    }
    _show(_client(api_url, key_env).set_holding, owner, body)


@holdings_app.command("delete")
def holdings_delete(
    owner: str, api_url: ApiUrlOpt = DEFAULT_API_URL, key_env: KeyEnvOpt = "SMSFLOW_API_KEY"
) -> None:
    """Remove an owner's holding (admin key): its subscriptions receive nothing from then on."""
    _show(_client(api_url, key_env).delete_holding, owner)
    typer.echo(f"holding of {owner} removed")


@app.command()
def send(
    to: Annotated[str, typer.Option("--to", help="destination in E.164, e.g. +85291234567")],
    sender: Annotated[str, typer.Option("--from", help="a number or alphanumeric sender ID you hold")],
    text: Annotated[str, typer.Option("--text", help="the message text")],
    callback_url: Annotated[str | None, typer.Option(help="where status transitions are POSTed")] = None,
    validity_s: Annotated[int | None, typer.Option(help="seconds until it expires (60 s - 72 h)")] = None,
    priority: Annotated[str | None, typer.Option(help="otp | transactional | bulk")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="send at most once for this key within 24 h (retries are safe)")
    ] = None,
    api_url: ApiUrlOpt = DEFAULT_API_URL,
    key_env: KeyEnvOpt = "SMSFLOW_API_KEY",
) -> None:
    """Send an SMS through `smsflow api` (POST /v1/messages); prints the message id. Follow it with
    `smsflow message <id>`."""
    body: dict[str, object] = {"to": to, "from": sender, "text": text}
    optional = {"callback_url": callback_url, "validity_s": validity_s, "priority": priority}
    body.update({k: v for k, v in optional.items() if v is not None})
    _show(_client(api_url, key_env).send_message, body, idempotency_key)


@app.command()
def message(
    message_id: str, api_url: ApiUrlOpt = DEFAULT_API_URL, key_env: KeyEnvOpt = "SMSFLOW_API_KEY"
) -> None:
    """An SMS you sent: its status and every transition (GET /v1/messages/{id})."""
    _show(_client(api_url, key_env).message, message_id)


apikeys_app = typer.Typer(help="API keys for `smsflow api`", no_args_is_help=True)
app.add_typer(apikeys_app, name="api-keys")


@apikeys_app.command("new")
def api_keys_new(
    owner: Annotated[str | None, typer.Option(help="customer the key acts for; none = operator key")] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option(help="subscriptions:read, subscriptions:write, messages:write (repeat; default all)"),
    ] = None,
    label: str = "",
    token_only: Annotated[
        bool, typer.Option(help="print only the token (e.g. for the admin key environment variable)")
    ] = False,
) -> None:
    """Make an API key. Prints its record (hashes only) for api.keys_file on stdout and the token, once, on
    stderr: `smsflow api-keys new --owner acme >> keys.jsonl`."""
    import orjson

    from smsflow.api.apikeys import ALL_SCOPES, ApiKeyStore, Scope

    try:
        scopes = [Scope(s) for s in scope] if scope else list(ALL_SCOPES)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--scope") from None
    try:
        key, token = ApiKeyStore().issue(owner, scopes, label)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--owner") from None
    if token_only:
        typer.echo(token)
        return
    typer.echo(orjson.dumps(key.to_record()).decode())
    typer.echo(f"API key (shown once, keep it secret): {token}", err=True)


def main() -> None:
    app()


if __name__ == "__main__":
    main()


routes_app = typer.Typer(
    help="The double list (docs/double-list.md) through the REST API of a running `smsflow api`: status, "
    "number lookup, and operator overrides (admin key; audited on sms.routes.decisions.v1).",
    no_args_is_help=True,
)
app.add_typer(routes_app, name="routes")


def _scope_path(scope: str) -> str:
    from urllib.parse import quote

    return quote(scope, safe=":")


@routes_app.command("status")
def routes_status(
    scope: Annotated[
        str | None, typer.Argument(help="a scope or a number: its active route and pool")
    ] = None,
    api_url: ApiUrlOpt = DEFAULT_API_URL,
    key_env: KeyEnvOpt = "SMSFLOW_API_KEY",
) -> None:
    """Every policy's state (active list, mode, alert, the last decision and why); with SCOPE, its lookup."""
    client = _client(api_url, key_env)
    if scope is None:
        _show(client.call, "GET", "/v1/routes")
    else:
        _show(client.call, "GET", f"/v1/routes/{_scope_path(scope)}/active")


@routes_app.command("override")
def routes_override(
    scope: Annotated[str, typer.Argument(help="e.g. prefix:+8526")],
    pin: Annotated[str, typer.Option(help="primary | secondary | auto")],
    reason: Annotated[str, typer.Option(help="why (kept in the audit trail)")],
    expires_in: Annotated[float | None, typer.Option(help="seconds until the pin lapses (required)")] = None,
    api_url: ApiUrlOpt = DEFAULT_API_URL,
    key_env: KeyEnvOpt = "SMSFLOW_ADMIN_API_KEY",
) -> None:
    """Pin a scope to one list until the expiry, whatever the health says."""
    body: dict[str, object] = {"pin": pin, "reason": reason, "expires_in_s": expires_in}
    _show(_client(api_url, key_env).call, "PUT", f"/v1/routes/{_scope_path(scope)}/override", body)


@routes_app.command("clear")
def routes_clear(
    scope: str,
    reason: Annotated[str, typer.Option(help="why")] = "cleared from the CLI",
    api_url: ApiUrlOpt = DEFAULT_API_URL,
    key_env: KeyEnvOpt = "SMSFLOW_ADMIN_API_KEY",
) -> None:
    """Clear a pin: health decides again at once."""
    path = f"/v1/routes/{_scope_path(scope)}/override"
    _show(_client(api_url, key_env).call, "DELETE", path, None, {"reason": reason})


policy_app = typer.Typer(
    help="Routing policies made through the API (admin key): a scope's primary and secondary lists, "
    "thresholds and hold-down. An API policy replaces the config's for the same scope; every worker applies "
    "a change without a restart, and the decision stage audits it on sms.routes.decisions.v1.",
    no_args_is_help=True,
)
routes_app.add_typer(policy_app, name="policy")


@policy_app.command("list")
def routes_policy_list(
    api_url: ApiUrlOpt = DEFAULT_API_URL, key_env: KeyEnvOpt = "SMSFLOW_ADMIN_API_KEY"
) -> None:
    """Every carrier policy in force (source config or api) and the API's last change of each scope."""
    _show(_client(api_url, key_env).call, "GET", "/v1/routes/policies")


@policy_app.command("get")
def routes_policy_get(
    scope: Annotated[str, typer.Argument(help="e.g. prefix:+8526")],
    api_url: ApiUrlOpt = DEFAULT_API_URL,
    key_env: KeyEnvOpt = "SMSFLOW_ADMIN_API_KEY",
) -> None:
    """The policy that decides SCOPE, and its last API change (who, when, why, before)."""
    _show(_client(api_url, key_env).call, "GET", f"/v1/routes/policies/{_scope_path(scope)}")


@policy_app.command("set")
def routes_policy_set(
    scope: Annotated[str, typer.Argument(help="number:+852..., prefix:+8526 or country:HK")],
    primary: Annotated[str, typer.Option(help="route ids, comma-separated, in order of preference")],
    secondary: Annotated[str, typer.Option(help="route ids, comma-separated, in order of preference")],
    reason: Annotated[str, typer.Option(help="why (kept in the audit trail)")],
    threshold: Annotated[
        list[str] | None,
        typer.Option(help="FIGURE.degraded=N, FIGURE.down=N or min_probes=N (repeat the option)"),
    ] = None,
    hold_down: Annotated[int, typer.Option(help="seconds: failback hold-down")] = 60,
    api_url: ApiUrlOpt = DEFAULT_API_URL,
    key_env: KeyEnvOpt = "SMSFLOW_ADMIN_API_KEY",
) -> None:
    """Create or replace SCOPE's API policy."""
    from smsflow.routing.model import PolicyError
    from smsflow.routing.policy_changes import thresholds_from_options

    try:
        thresholds = thresholds_from_options(threshold or [])
    except PolicyError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    body = {
        "primary": [r.strip() for r in primary.split(",") if r.strip()],
        "secondary": [r.strip() for r in secondary.split(",") if r.strip()],
        "thresholds": thresholds,
        "hold_down_s": hold_down,
        "reason": reason,
    }
    _show(_client(api_url, key_env).call, "PUT", f"/v1/routes/policies/{_scope_path(scope)}", body)


@policy_app.command("delete")
def routes_policy_delete(
    scope: str,
    reason: Annotated[str, typer.Option(help="why")] = "deleted from the CLI",
    api_url: ApiUrlOpt = DEFAULT_API_URL,
    key_env: KeyEnvOpt = "SMSFLOW_ADMIN_API_KEY",
) -> None:
    """Delete SCOPE's API policy: the config's policy for it (if any) decides again."""
    path = f"/v1/routes/policies/{_scope_path(scope)}"
    _show(_client(api_url, key_env).call, "DELETE", path, None, {"reason": reason})
