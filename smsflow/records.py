"""The Python shape of Avro records that cross module boundaries (schemas/*.avsc is the contract; these
mirror it field by field for the type checker, the wire format is the schema's)."""

from __future__ import annotations

from typing import NotRequired, TypedDict


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
    # how the connector read the addresses (smsflow/numbers/handoff.py); absent or None from other writers
    numbers: NotRequired[str | None]


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


class UdhElement(TypedDict):
    iei: int
    data: bytes


class InboundMessage(TypedDict):
    """``sms.inbound.v1`` (schemas/inbound_message.avsc): one whole, decoded, enriched SMS, written by ingest
    and read by delivery (and the API's resend)."""

    message_id: str
    from_number: str
    to_number: str
    from_original: str
    to_original: str
    body: str
    encoding: str
    data_coding: int
    segment_count: int
    incomplete: bool
    missing_segments: list[int]
    received_at: int  # timestamp-millis
    completed_at: int  # timestamp-millis
    carrier_id: str
    route_id: str
    country_code: str | None
    otp: str | None
    otp_validity_seconds: int | None
    from_type: str | None
    from_calling_code: int | None
    from_operator: str | None
    to_country_code: str | None
    to_operator: str | None
    to_calling_code: int | None
    to_type: str | None
    sender_signature: str | None
    language: str | None
    udh_elements: list[UdhElement]


class ReceiptReading(TypedDict):
    """What a delivery receipt says of the MT it reports on, read from its TLVs and its ``id:… stat:…`` text
    (``smsflow.ingest.receipts.parse_receipt``); every field fits the schema whatever the carrier wrote."""

    message_id: str
    message_id_decimal: str | None
    state: str
    error_code: str | None
    submitted: int | None
    delivered: int | None
    submit_date: str | None
    done_date: str | None
    text: str | None


class DeliveryReceipt(ReceiptReading):
    """``sms.receipts.v1`` (schemas/delivery_receipt.avsc): a carrier's delivery receipt, told apart in
    ingest: its reading, and which receipt it is, from and to whom, over which carrier and route, when."""

    receipt_id: str
    from_number: str
    to_number: str
    esm_class: int
    carrier_id: str
    route_id: str
    received_at: int  # timestamp-millis
