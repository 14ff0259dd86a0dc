"""Outbound encoding: the parts a handset receives join back to the text, fit their limits, and are as few
as the alphabet allows; references are not reused within the window."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsflow.outbound.encode import (
    MAX_SEGMENTS,
    EncodedMessage,
    EncodeError,
    encode_message,
    part_limit,
    segments_needed,
    units_of,
)
from smsflow.outbound.references import ReferenceBook, RefExhausted
from smsflow.sms import gsm0338
from smsflow.sms.udh import concat_info, parse_udh

GSM_CHARS = [c for c in gsm0338.DEFAULT_ALPHABET if c != "\x1b"] + list(gsm0338.EXTENSION_TABLE.values())
ANY_CHAR = st.characters(exclude_categories=("Cs",))  # lone surrogates are not text
TEXTS = st.one_of(
    st.text(st.sampled_from(GSM_CHARS), min_size=1, max_size=800),
    st.text(ANY_CHAR, min_size=1, max_size=300),
    st.text(st.sampled_from(["a", "€", "😀", "中", "{"]), min_size=1, max_size=400),
)


def handset_view(msg: EncodedMessage) -> tuple[str, list[int]]:
    """What a handset does: strip each UDH, check the concat element, join, decode. Returns the text and
    the units per part."""
    payloads, units = [], []
    for seq, seg in enumerate(msg.segments, start=1):
        data = seg.short_message
        if len(msg.segments) > 1:
            ies, data = parse_udh(data)
            info = concat_info(ies)
            assert info is not None
            assert (info.ref, info.total, info.seq, info.ref_bits) == (
                msg.ref,
                len(msg.segments),
                seq,
                msg.ref_bits,
            )
        payloads.append(data)
        units.append(len(data) if msg.alphabet == "gsm7" else len(data) // 2)
    joined = b"".join(payloads)
    text = gsm0338.decode_unpacked(joined) if msg.alphabet == "gsm7" else joined.decode("utf-16-be")
    return text, units


@settings(max_examples=300, deadline=None)
@given(text=TEXTS, ref_bits=st.sampled_from([8, 16]))
def test_parts_join_back_fit_their_limit_and_are_fewest(text: str, ref_bits: int) -> None:
    try:
        msg = encode_message(text, ref=200, ref_bits=ref_bits, max_segments=255)  # type: ignore[arg-type]
    except EncodeError as exc:
        assert "parts" in exc.reason
        return
    decoded, units = handset_view(msg)
    assert decoded == text
    parts = len(msg.segments)
    limit = part_limit(msg.alphabet, parts, msg.ref_bits)
    assert all(u <= limit for u in units)
    # A part boundary never falls inside an escape or a surrogate pair: each part decodes on its own.
    for seg in msg.segments:
        data = parse_udh(seg.short_message)[1] if parts > 1 else seg.short_message
        if msg.alphabet == "gsm7":
            assert not data.endswith(b"\x1b")
        else:
            data.decode("utf-16-be")
    assert parts == fewest_parts(text, msg.alphabet, msg.ref_bits)
    assert segments_needed(text, msg.ref_bits) == parts


def fewest_parts(text: str, alphabet: str, ref_bits: int) -> int:
    """The optimum, found independently: the least number of contiguous runs of whole characters that fit
    the part limit (dynamic programming over the characters)."""
    sizes = [units_of(ch, alphabet) for ch in text]  # type: ignore[arg-type]
    if sum(sizes) <= part_limit(alphabet, 1, ref_bits):  # type: ignore[arg-type]
        return 1
    limit = part_limit(alphabet, 2, ref_bits)  # type: ignore[arg-type]
    best = [0] + [len(sizes) + 1] * len(sizes)  # best[i]: fewest parts for the first i characters
    for i in range(1, len(sizes) + 1):
        run, j = 0, i
        while j > 0 and run + sizes[j - 1] <= limit:
            run += sizes[j - 1]
            j -= 1
            best[i] = min(best[i], best[j] + 1)
    return best[-1]


@pytest.mark.parametrize(
    ("text", "alphabet", "parts", "units"),
    [
        ("a" * 160, "gsm7", 1, 160),
        ("a" * 161, "gsm7", 2, 161),
        ("a" * 306, "gsm7", 2, 306),
        ("a" * 307, "gsm7", 3, 307),
        ("€" * 80, "gsm7", 1, 160),  # an extension character counts two septets
        ("€" * 81, "gsm7", 2, 162),
        ("中" * 70, "ucs2", 1, 70),
        ("中" * 71, "ucs2", 2, 71),
        ("中" * 134, "ucs2", 2, 134),
        ("中" * 135, "ucs2", 3, 135),
        ("😀" * 35, "ucs2", 1, 70),  # a surrogate pair counts two code units
        ("Привет", "ucs2", 1, 6),
    ],
)
def test_alphabet_and_part_count(text: str, alphabet: str, parts: int, units: int) -> None:
    msg = encode_message(text, ref=1)
    assert (msg.alphabet, len(msg.segments), msg.units) == (alphabet, parts, units)
    assert msg.data_coding == (0 if alphabet == "gsm7" else 8)
    assert (msg.ref is None) == (parts == 1)


def test_escape_at_a_part_boundary_moves_whole_to_the_next_part() -> None:
    text = "a" * 152 + "€" + "b" * 10  # the escape would straddle septets 153/154
    msg = encode_message(text, ref=9)
    first = parse_udh(msg.segments[0].short_message)[1]
    assert len(first) == 152 and first[-1:] == b"a"
    assert handset_view(msg)[0] == text


def test_surrogate_pair_at_a_part_boundary_moves_whole_to_the_next_part() -> None:
    text = "中" * 66 + "😀" + "中" * 5  # units 67-68 are the pair; an 8-bit part holds 67
    msg = encode_message(text, ref=9)
    first = parse_udh(msg.segments[0].short_message)[1]
    assert len(first) == 132
    assert handset_view(msg)[0] == text


def test_sixteen_bit_reference_parts_are_smaller() -> None:
    assert len(encode_message("a" * 306, ref=1, ref_bits=8).segments) == 2
    assert len(encode_message("a" * 306, ref=1, ref_bits=16).segments) == 3
    assert len(encode_message("a" * 304, ref=1000, ref_bits=16).segments) == 2


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("a\ud800b", "lone UTF-16 surrogate"),
        ("a" * (153 * MAX_SEGMENTS + 1), f"at most {MAX_SEGMENTS}"),
    ],
)
def test_refused_texts_say_why(text: str, reason: str) -> None:
    with pytest.raises(EncodeError) as err:
        encode_message(text, ref=1)
    assert reason in err.value.reason


def test_maximum_segments_is_exactly_reachable() -> None:
    assert len(encode_message("a" * 153 * MAX_SEGMENTS, ref=1).segments) == MAX_SEGMENTS


def test_references_go_round_per_destination_and_skip_recent_ones() -> None:
    book = ReferenceBook(ref_bits=8, reuse_after_ms=1000)
    refs = []
    for i in range(256):
        result = book.allocate("+85291234567", now_ms=i)
        assert not isinstance(result, RefExhausted)
        book, ref = result
        refs.append(ref)
    assert sorted(refs) == list(range(256))
    exhausted = book.allocate("+85291234567", now_ms=500)
    assert isinstance(exhausted, RefExhausted) and "16-bit" in exhausted.reason
    other = book.allocate("+85290000000", now_ms=500)  # another destination has its own references
    assert not isinstance(other, RefExhausted) and other[1] == 0
    again = book.allocate("+85291234567", now_ms=1000)  # ref 0 was used at 0: free again after 1000 ms
    assert not isinstance(again, RefExhausted) and again[1] == 0


def test_one_senders_traffic_to_a_number_leaves_another_senders_references_alone() -> None:
    """Keyed by destination alone, Mallory's 256 two-part messages to a handset (512 segments: seconds of
    her send rate) made every tenant's multipart message to it refused for 24 h. A handset joins parts by
    sender and reference, so each sender has its own 256; entries of the old key still count as used."""
    from smsflow.outbound.references import allocate_in

    table: dict[str, object] = {}
    for i in range(256):
        assert allocate_in(table, "MALLORY", "+85291234567", now_ms=i) == i
    refused = allocate_in(table, "MALLORY", "+85291234567", now_ms=300)
    assert isinstance(refused, RefExhausted) and "from MALLORY to +85291234567" in refused.reason
    assert allocate_in(table, "+85230001000", "+85291234567", now_ms=300) == 0  # Alice's own references
    legacy = {"+85291234567": {"cursor": 3, "used_at": [[0, 1], [1, 1], [2, 1]]}}  # before the change
    assert allocate_in(legacy, "+85230001000", "+85291234567", now_ms=5) == 3
    assert set(legacy) == {"+85291234567", "+85230001000|+85291234567"}


def test_a_restart_rebuilt_from_the_ledger_does_not_reuse_a_recent_reference() -> None:
    before = ReferenceBook()
    for t in range(3):
        result = before.allocate("+4479", now_ms=t)
        assert not isinstance(result, RefExhausted)
        before = result[0]
    # After a restart the book is empty; the ledger's intents (dest, ref, at) are replayed into it.
    rebuilt = ReferenceBook().record("+4479", 0, 0).record("+4479", 2, 2).record("+4479", 1, 1)
    result = rebuilt.allocate("+4479", now_ms=10)
    assert not isinstance(result, RefExhausted)
    assert result[1] == 3


def test_pruning_forgets_only_destinations_whose_references_aged_out() -> None:
    book = (
        ReferenceBook(reuse_after_ms=1000).record("+4479", 5, 0).record("+4479", 6, 900).record("+8529", 1, 0)
    )
    pruned = book.pruned(now_ms=1500)
    assert set(pruned.destinations) == {"+4479"}
    assert pruned.destinations["+4479"].used_at == ((6, 900),)
    result = pruned.allocate("+4479", now_ms=1500)
    assert not isinstance(result, RefExhausted) and result[1] == 7  # the cursor survives pruning
