"""An SMPP address as one value: type of number, numbering plan indicator, digits (as cloudhopper-smpp's
``Address``), instead of three loose values per party passed side by side."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class Address:
    ton: int
    npi: int
    digits: str

    @classmethod
    def source_of(cls, params: Mapping[str, Any]) -> Address:
        """The source address of a deliver_sm/submit_sm, from its decoded parameters."""
        return cls(
            int(params.get("source_addr_ton", 0)),
            int(params.get("source_addr_npi", 0)),
            str(params.get("source_addr", "")),
        )

    @classmethod
    def destination_of(cls, params: Mapping[str, Any]) -> Address:
        return cls(
            int(params.get("dest_addr_ton", 0)),
            int(params.get("dest_addr_npi", 0)),
            str(params.get("destination_addr", "")),
        )

    def read_as(self, ton: int, npi: int) -> Address:
        """The same digits under the TON/NPI a carrier profile says the carrier meant."""
        return replace(self, ton=ton, npi=npi)
