"""Sender signature: the brand a Chinese SMS carries in 【…】 (or [...]) at its start or end.

Chinese regulation requires application-to-person SMS to be signed this way (【京东】,
【广发信用卡发现精彩】); senders elsewhere copied the habit with ASCII brackets ([TikTok]).
"""

from __future__ import annotations

import re

_MAX_LEN = 30
_EDGE = _MAX_LEN * 3 + 8  # brackets, the brand and the spaces around it inside them
_BRACKETED = (
    rf"【\s*([^【】\n]{{1,{_MAX_LEN}}}?)\s*】"
    rf"|〖\s*([^〖〗\n]{{1,{_MAX_LEN}}}?)\s*〗"
    rf"|［\s*([^［］\n]{{1,{_MAX_LEN}}}?)\s*］"
    rf"|\[\s*([^\[\]\n]{{1,{_MAX_LEN}}}?)\s*\]"
)
_AT_START = re.compile(rf"^\s*(?:<#>\s*)?(?:{_BRACKETED})")
_AT_END = re.compile(rf"(?:{_BRACKETED})\s*$")
# "[1/2]" in front of a multipart part, "[2]" counters: not brands.
_NOT_A_BRAND = re.compile(r"[\d\s/]*\d[\d\s/]*/[\d\s/]*|\d{1,2}")
_OPENERS = frozenset("【〖［[<")
_CLOSERS = frozenset("】〗］]")


def signature_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, brand) of the signature at the start and the one at the end of ``text``; the span
    covers the brackets."""
    spans: list[tuple[int, int, str]] = []
    stripped = text.strip()
    if not stripped:
        return spans
    # A signature is at most _EDGE characters long: read only that much at each end, so a long text
    # costs no more than a short one (whitespace after the signature is skipped, not scanned).
    last = len(text.rstrip())
    tail = max(0, last - _EDGE)
    for pattern, edge, brackets, start, end in (
        (_AT_START, stripped[0], _OPENERS, 0, len(text)),
        (_AT_END, stripped[-1], _CLOSERS, tail, last),
    ):
        if edge not in brackets:
            continue  # most texts: no regex run at all
        match = pattern.search(text, start, end)
        if match is None:
            continue
        group = next(i for i in range(1, 5) if match.group(i) is not None)
        brand = match.group(group).strip()
        if brand.isdigit() and (pattern is _AT_END or group > 2):
            # "验证码是【123456】", "[482019] is your code": digits are a code. Only a leading 【…】
            # holds a numeric brand (【12306】, 【10086】).
            continue
        if brand and not _NOT_A_BRAND.fullmatch(brand):
            if not spans or spans[0][1] <= match.start():
                spans.append((match.start(), match.end(), brand))
    return spans


def sender_signature(text: str) -> str | None:
    """The brand in the leading signature, else in the trailing one, else None."""
    spans = signature_spans(text)
    return spans[0][2] if spans else None
