"""Outbound SMS (mobile-terminated): the pure core — encoding, the request and its status, receipt
correlation and the submission ledger. No Kafka, no asyncio; time is always an argument.
See docs/outbound.md."""
