"""Local infrastructure for development and tests: a real Kafka broker, a Zipkin server.

Each service is a class with fetch / start / wait_ready / stop, its data under a folder you choose and
free loopback ports unless you pass some. Imported lazily so ``python -m devkit.local.kafka`` runs clean.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devkit.local.jvm import LocalServiceError
    from devkit.local.kafka import LocalKafka
    from devkit.local.zipkin import LocalZipkin

__all__ = ["LocalKafka", "LocalServiceError", "LocalZipkin"]


def __getattr__(name: str) -> Any:
    if name == "LocalKafka":
        from devkit.local.kafka import LocalKafka

        return LocalKafka
    if name == "LocalZipkin":
        from devkit.local.zipkin import LocalZipkin

        return LocalZipkin
    if name == "LocalServiceError":
        from devkit.local.jvm import LocalServiceError

        return LocalServiceError
    raise AttributeError(name)
