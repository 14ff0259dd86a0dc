"""Load the enrichment rule files shipped in ``smsflow/enrich/data`` (read once, at import)."""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml


def load_rules(name: str) -> dict[str, Any]:
    """Parse ``data/<name>`` and return its top-level mapping."""
    text = resources.files("smsflow.enrich").joinpath("data").joinpath(name).read_text(encoding="utf-8")
    loaded = yaml.safe_load(text)
    if not isinstance(loaded, dict):
        raise ValueError(f"smsflow/enrich/data/{name}: expected a mapping at top level")
    return loaded
