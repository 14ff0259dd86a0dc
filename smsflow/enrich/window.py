"""How much of a message enrichment reads.

The OTP extractor and the language detector read the first ``SCAN_CHARS`` characters of a message;
the signature reader looks at its two ends only. The body is delivered whole either way: this bounds
the CPU one message can take on the event loop (a legal 255-part SMS is 39,015 characters, an SMPP
``message_payload`` 64 KiB), whatever it holds.

Why 1,024 is safe: an OTP sender pays per part and sends one or two (at most 306 GSM-7 or 134
UCS-2 characters). In our labelled corpus the longest OTP text is 162 characters and no code starts
after character 52. 1,024 characters are 7 GSM-7 parts or 16 UCS-2 parts. Language is decided on
the same window: fastText reads only the first 200 characters anyway, and the script counts of a
kilobyte of text decide the same as of the whole.
"""

from __future__ import annotations

SCAN_CHARS = 1024
# Characters read past SCAN_CHARS so that a code (at most 15 characters: "8 1 0 2 4 7 1 9") or a
# validity that STARTS in the window is read whole, with the few characters after it that decide
# whether it is glued to a longer number or followed by a unit.
CONTEXT_CHARS = 48
