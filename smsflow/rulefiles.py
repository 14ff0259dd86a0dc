"""Load the YAML rule files a package ships in its ``data/`` folder (read once, at import)."""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml


def load_rules(package: str, name: str) -> dict[str, Any]:
    """Parse ``<package>/data/<name>`` and return its top-level mapping."""
    text = resources.files(package).joinpath("data").joinpath(name).read_text(encoding="utf-8")
    loaded = yaml.safe_load(text)
    if not isinstance(loaded, dict):
        raise ValueError(f"{package.replace('.', '/')}/data/{name}: expected a mapping at top level")
    return loaded
