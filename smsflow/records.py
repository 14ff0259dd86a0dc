"""The Python shape of Avro records that cross module boundaries (schemas/*.avsc is the contract; these
mirror it field by field for the type checker, the wire format is the schema's)."""

from __future__ import annotations

from typing import TypedDict


class RawPdu(TypedDict):
    """``sms.raw.v1`` (schemas/raw_pdu.avsc): one PDU as a carrier sent it, written by a connector."""

    carrier_id: str
    route_id: str
    session_id: str
    protocol: str
    received_at: int  # timestamp-millis
    command_id: int
    sequence_number: int
    source_addr: str
    source_addr_ton: int
    source_addr_npi: int
    destination_addr: str
    dest_addr_ton: int
    dest_addr_npi: int
    esm_class: int
    data_coding: int
    pdu: bytes
    remote_addr: str | None


class QuarantinedPdu(TypedDict):
    """``sms.quarantine.v1`` (schemas/quarantined_pdu.avsc): input we could not accept, with the reason."""

    stage: str
    carrier_id: str
    route_id: str
    session_id: str
    received_at: int  # timestamp-millis
    status: int
    reason: str
    pdu: bytes
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
