"""The ingest stage's pure logic: decode, reassemble, dedup, receipts and quarantine, no Kafka code.

Import the modules themselves (``smsflow.ingest.processor`` ...): this package imports nothing, so the
connector can build a quarantine record without loading enrichment.
"""
