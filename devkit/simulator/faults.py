"""Faults a simulated carrier can be told to have, per account, switched on and off while it runs.

A fault is a value: its kind, the few figures that kind needs, and an optional duration after which it lapses
by itself (so a test or an operator can say "refuse binds for 30 s" and not have to remember to clear it).
``FaultBoard`` holds the faults in force; the SMSC asks it at each decision point (bind, push, submit). The
JSON form is what the control endpoint and ``smsflow simulator fault set`` send; a bad one is refused with the
field path and why, like a bad config.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from smsflow.smpp.constants import CommandStatus


class FaultKind(StrEnum):
    refuse_binds = "refuse_binds"  # bind_resp with an error status (default ESME_RBINDFAIL)
    drop = "drop"  # close the account's connections now, or each one every_s after it bound
    deliver_latency = "deliver_latency"  # hold each deliver_sm latency_ms before it goes out
    probe_latency = "probe_latency"  # add latency_ms to the probe loop-back (on top of the configured one)
    submit_errors = "submit_errors"  # answer a ratio of submit_sm with an error status
    throttle = "throttle"  # at most tps submit_sm accepted (the rest ESME_RTHROTTLED) and deliver_sm pushed
    silent = "silent"  # binds and enquire_link answered; nothing pushed, submit_sm never answered
    probe_loss = "probe_loss"  # a ratio of probes never comes back


# the fields each kind takes: (required, optional); duration_s is allowed for every kind
_FIELDS: dict[FaultKind, tuple[frozenset[str], frozenset[str]]] = {
    FaultKind.refuse_binds: (frozenset(), frozenset({"status"})),
    FaultKind.drop: (frozenset(), frozenset({"every_s"})),
    FaultKind.deliver_latency: (frozenset({"latency_ms"}), frozenset()),
    FaultKind.probe_latency: (frozenset({"latency_ms"}), frozenset()),
    FaultKind.submit_errors: (frozenset({"ratio"}), frozenset({"status"})),
    FaultKind.throttle: (frozenset({"tps"}), frozenset()),
    FaultKind.silent: (frozenset(), frozenset()),
    FaultKind.probe_loss: (frozenset({"ratio"}), frozenset()),
}
_DEFAULT_STATUS = {
    FaultKind.refuse_binds: int(CommandStatus.ESME_RBINDFAIL),
    FaultKind.submit_errors: int(CommandStatus.ESME_RTHROTTLED),
}
# statuses after which an ESME should retry the same submit later (the rest are permanent for that message)
TEMPORARY_SUBMIT_STATUSES = frozenset(
    {int(CommandStatus.ESME_RTHROTTLED), int(CommandStatus.ESME_RMSGQFUL), int(CommandStatus.ESME_RX_T_APPN)}
)


class FaultError(ValueError):
    """A fault description that cannot be applied: ``path`` names the field, the message says why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    status: int = 0
    ratio: float = 0.0
    latency_ms: float = 0.0
    every_s: float | None = None
    tps: float = 0.0
    duration_s: float | None = None
    set_at: float = 0.0  # clock() when it was set

    @property
    def expires_at(self) -> float | None:
        return None if self.duration_s is None else self.set_at + self.duration_s

    def to_dict(self, now: float) -> dict[str, object]:
        """The JSON form, the way it was given, plus how long it still holds."""
        required, optional = _FIELDS[self.kind]
        out: dict[str, object] = {"kind": str(self.kind)}
        for name in sorted(required | optional):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.kind in _DEFAULT_STATUS:
            out["status_name"] = status_name(self.status)
        if self.duration_s is not None:
            out["duration_s"] = self.duration_s
            out["expires_in_s"] = round(max(0.0, self.set_at + self.duration_s - now), 3)
        return out


def status_name(status: int) -> str:
    try:
        return CommandStatus(status).name
    except ValueError:
        return f"0x{status:08X}"


def _status(value: object, path: str) -> int:
    if isinstance(value, str):
        try:
            return int(CommandStatus[value])
        except KeyError:
            pass
        try:
            value = int(value, 0)
        except ValueError:
            reason = f"unknown command_status {value!r} (a name like ESME_RTHROTTLED or a number)"
            raise FaultError(path, reason) from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise FaultError(path, "must be a command_status name or number")
    if not 0 < value <= 0xFFFFFFFF:
        raise FaultError(path, "must be a non-zero 32-bit command_status (0 is ESME_ROK, not a fault)")
    return value


def _number(
    value: object, path: str, *, low: float, high: float | None = None, low_open: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FaultError(path, "must be a number")
    v = float(value)
    if (v <= low if low_open else v < low) or (high is not None and v > high):
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        raise FaultError(path, f"must be {bound}" + (f" and <= {high:g}" if high is not None else ""))
    return v


def parse_fault(data: object, path: str = "fault", now: float = 0.0) -> Fault:
    """Read a fault from its JSON form, checking every field; raises ``FaultError`` naming the field."""
    if not isinstance(data, Mapping):
        raise FaultError(path, "must be an object with a 'kind'")
    raw_kind = data.get("kind")
    try:
        kind = FaultKind(str(raw_kind))
    except ValueError:
        known = ", ".join(k.value for k in FaultKind)
        raise FaultError(f"{path}.kind", f"unknown fault {raw_kind!r} (one of: {known})") from None
    required, optional = _FIELDS[kind]
    allowed = required | optional | {"kind", "duration_s"}
    for name in data:
        if name not in allowed:
            fields = ", ".join(sorted(allowed))
            raise FaultError(f"{path}.{name}", f"not a field of a {kind} fault (fields: {fields})")
    for name in sorted(required):
        if data.get(name) is None:
            raise FaultError(f"{path}.{name}", f"required for a {kind} fault")
    status = _DEFAULT_STATUS.get(kind, 0)
    if data.get("status") is not None:
        status = _status(data["status"], f"{path}.status")
    ratio = latency = tps = 0.0
    every = duration = None
    if "ratio" in required:
        ratio = _number(data["ratio"], f"{path}.ratio", low=0.0, high=1.0)
    if "latency_ms" in required:
        latency = _number(data["latency_ms"], f"{path}.latency_ms", low=0.0)
    if "tps" in required:
        tps = _number(data["tps"], f"{path}.tps", low=0.0, low_open=True)
    if data.get("every_s") is not None:
        every = _number(data["every_s"], f"{path}.every_s", low=0.0, low_open=True)
    if data.get("duration_s") is not None:
        duration = _number(data["duration_s"], f"{path}.duration_s", low=0.0, low_open=True)
    return Fault(kind, status, ratio, latency, every, tps, duration, now)


class RateGate:
    """A token bucket of ``tps`` per second (burst of one second's worth): the throttle fault's cap."""

    def __init__(self, tps: float, now: float) -> None:
        self.tps = tps
        self.capacity = max(1.0, tps)
        self.tokens = self.capacity
        self.at = now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.tps)
        self.at = now

    def take(self, now: float) -> bool:
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def wait_s(self, now: float) -> float:
        """Seconds until a token is free (0 when one is)."""
        self._refill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.tps


class FaultBoard:
    """The faults in force per account. Expired faults vanish on the next look."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._faults: dict[str, dict[FaultKind, Fault]] = {}
        self._gates: dict[tuple[str, str], RateGate] = {}

    def set(self, account: str, fault: Fault) -> Fault:
        """Put a fault in force (replacing one of the same kind); its duration runs from now."""
        fault = Fault(**{**fault.__dict__, "set_at": self.clock()})
        self._faults.setdefault(account, {})[fault.kind] = fault
        self._gates = {k: g for k, g in self._gates.items() if k[0] != account}
        return fault

    def clear(self, account: str, kind: FaultKind | None = None) -> list[Fault]:
        """Lift one kind of fault, or all of them; returns what was lifted."""
        faults = self._faults.get(account, {})
        kinds = [kind] if kind is not None else list(faults)
        return [f for k in kinds if (f := faults.pop(k, None)) is not None]

    def active(self, account: str, kind: FaultKind) -> Fault | None:
        faults = self._faults.get(account)
        if not faults:
            return None
        fault = faults.get(kind)
        if fault is None:
            return None
        expires = fault.expires_at
        if expires is not None and self.clock() >= expires:
            del faults[kind]
            return None
        return fault

    def listing(self, account: str) -> list[Fault]:
        return [f for k in list(self._faults.get(account, {})) if (f := self.active(account, k)) is not None]

    def gate(self, account: str, use: str) -> RateGate | None:
        """The throttle's token bucket for one use (``submit`` or ``deliver``) of an account, if throttled."""
        fault = self.active(account, FaultKind.throttle)
        if fault is None:
            return None
        key = (account, use)
        gate = self._gates.get(key)
        if gate is None or gate.tps != fault.tps:
            gate = self._gates[key] = RateGate(fault.tps, self.clock())
        return gate
