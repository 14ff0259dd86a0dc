"""``smsflow``: one entry point, a subcommand per process role and per operation."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from smsflow.config import ConfigError, load_config

app = typer.Typer(
    help="smsflow: Kafka-native SMS reception. Carriers -> Kafka -> Faust -> signed customer webhooks.",
    no_args_is_help=True,
    add_completion=False,
)

ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="YAML config file", exists=True, dir_okay=False)
]
DEFAULT_DEMO = Path(__file__).resolve().parent.parent / "config" / "demo.yaml"


def _load(path: Path):  # type: ignore[no-untyped-def]
    try:
        return load_config(path)
    except ConfigError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


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
) -> None:
    """Run the whole pipeline locally, with a simulated carrier and a demo webhook."""
    from smsflow.demo.pipeline import DemoOptions, run_demo

    cfg = _load(config)
    opts = DemoOptions(
        rate=rate,
        duration=duration,
        multipart_ratio=multipart,
        dup_ratio=duplicates,
        workdir=workdir,
        zipkin=zipkin,
    )
    sys.exit(asyncio.run(run_demo(cfg, config, opts)))


@app.command()
def worker(
    config: ConfigOpt,
    stage: Annotated[list[str] | None, typer.Option(help="ingest and/or deliver (default both)")] = None,
    loglevel: str = "warning",
) -> None:
    """Faust worker running the stream stages (ingest: raw -> inbound; deliver: inbound -> webhooks)."""
    from smsflow.roles import run_worker

    cfg = _load(config)
    roles = set(stage or ["ingest", "deliver"])
    bad = roles - {"ingest", "deliver"}
    if bad:
        raise typer.BadParameter(f"unknown stage(s): {', '.join(sorted(bad))}", param_hint="--stage")
    # Faust's Worker parses sys.argv; give it none of ours.
    sys.argv = [sys.argv[0]]
    try:
        run_worker(cfg, roles, loglevel)
    except ConfigError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


@app.command()
def connector(config: ConfigOpt, loglevel: str = "info") -> None:
    """Carrier connector: SMPP sessions storing every deliver_sm in sms.raw.v1 before acknowledging it."""
    from smsflow.roles import configure_logging, run_connector

    configure_logging(loglevel)
    cfg = _load(config)
    try:
        asyncio.run(run_connector(cfg))
    except ConfigError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


@app.command()
def simulator(
    port: Annotated[int, typer.Option(help="SMPP port to listen on")] = 2775,
    system_id: Annotated[str, typer.Option(help="account the ESME binds with")] = "smsflow",
    password_env: Annotated[
        str, typer.Option(help="env var with the bind password")
    ] = "SMSFLOW_SIM_PASSWORD",
    rate: Annotated[float, typer.Option(help="deliver_sm per second (logical SMS)")] = 10.0,
    count: Annotated[int, typer.Option(help="stop after this many SMS; 0 = endless")] = 0,
    multipart: float = 0.2,
    duplicates: float = 0.0,
    seed: int = 1,
) -> None:
    """A simulated carrier SMSC pushing seed-style OTP traffic (+852/+86 senders) to whoever binds."""
    from smsflow.demo.feed import run_simulator

    password = os.environ.get(password_env)
    if password is None:
        raise typer.BadParameter(
            f"environment variable {password_env} is not set", param_hint="--password-env"
        )
    asyncio.run(run_simulator(port, system_id, password, rate, count, multipart, duplicates, seed))


@app.command()
def receiver(
    port: Annotated[int, typer.Option()] = 8088,
    secret_env: Annotated[
        str, typer.Option(help="env var with the whsec_ secret")
    ] = "SMSFLOW_DEMO_WEBHOOK_SECRET",
) -> None:
    """A demo customer webhook that verifies Standard Webhooks signatures and prints what arrives."""
    from smsflow.demo.feed import run_receiver

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
    from smsflow.registry.__main__ import main as registry_main

    registry_main(["--bootstrap", bootstrap, "--port", str(port), "--host", host])


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
    from smsflow.local.kafka import LocalKafka

    k = LocalKafka(home, port=port, die_with_parent=False)
    k.fetch()
    k.start()
    k.wait_ready()
    typer.echo(k.bootstrap)


@kafka_app.command("stop")
def kafka_stop(home: Path = Path(".work/kafka")) -> None:
    from smsflow.local.kafka import LocalKafka

    LocalKafka(home).stop()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
