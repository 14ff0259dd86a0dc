"""How a config error names its field (``carriers[0].receipts.id_form: ...``), for every config section:
one formatter, so the main config and the routing section (and its API overrides) say it the same way."""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydantic import ValidationError

# A validator that names a sub-field starts its message with it: "url: must be https"
_SUB_FIELD = re.compile(r"[a-z_]+(\[\d+\])?")


def field_path(loc: Iterable[str | int], prefix: str = "") -> str:
    """``("carriers", 0, "id")`` -> ``carriers[0].id``; ``prefix`` (a path itself) goes in front."""
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def validation_messages(exc: ValidationError, prefix: str = "") -> list[str]:
    """One ``path: reason`` line per error; a model validator's message that names a sub-field is joined to
    the model's path (``schema_registry`` + ``basic_auth_user_env: ...``)."""
    lines = []
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        head, sep, rest = msg.partition(": ")
        loc = tuple(err["loc"])
        path = field_path(loc, prefix)
        if sep and _SUB_FIELD.fullmatch(head):
            if loc and isinstance(loc[-1], str) and head.startswith(loc[-1]):
                lines.append(f"{path}{head[len(loc[-1]) :]}: {rest}")  # pool + [0]
            else:
                lines.append(f"{path}.{head}: {rest}" if path else f"{head}: {rest}")
        else:
            lines.append(f"{path}: {msg}" if path else msg)
    return lines
