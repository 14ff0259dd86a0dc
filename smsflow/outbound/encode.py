"""Choose the alphabet of an outbound SMS and cut it into submit_sm parts.

GSM 03.38 (default alphabet plus the extension table, whose characters take two septets: ESC + code) when
every character has a GSM code, else UCS-2 (UTF-16BE, so a character outside the BMP takes a surrogate pair,
two code units). Limits per part, in septets (GSM) or UTF-16 code units (UCS-2):

    alphabet   single   8-bit reference   16-bit reference
    GSM 7-bit    160          153               152
    UCS-2         70           67                66

The cutting itself is `smsflow.sms.segmentation.split_for_smpp` (the same code the simulator uses): parts end
on character boundaries, so an escape or a surrogate pair is never split, and its greedy fill gives the
fewest parts for the alphabet (each character is an indivisible item of 1-2 units; filling each part as far
as it goes never needs more parts than any other cut).

`MAX_SEGMENTS` caps a message at 10 parts (1530 GSM characters, 670 UCS-2): every part is billed as one SMS,
handsets reassemble long chains unreliably (a part lost in 10 is already a visible failure), and a runaway
text (a file pasted into an OTP template) must be refused, not sent as 255 parts. A caller can ask for less
or more, up to the 255 that the concatenation element can count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from smsflow.sms import gsm0338
from smsflow.sms.segmentation import Segment, SegmentationError, split_for_smpp

Alphabet = Literal["gsm7", "ucs2"]
RefBits = Literal[8, 16]

MAX_SEGMENTS = 10
CONCAT_LIMIT = 255  # the concatenation element's "total" is one octet

DATA_CODING: dict[Alphabet, int] = {"gsm7": 0x00, "ucs2": 0x08}
_OCTETS_PER_UNIT: dict[Alphabet, int] = {"gsm7": 1, "ucs2": 2}  # SMPP carries GSM unpacked


class EncodeError(ValueError):
    """A text that cannot be sent, with the reason in words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class EncodedMessage:
    alphabet: Alphabet
    data_coding: int
    units: int
    """Septets (GSM) or UTF-16 code units (UCS-2) of the whole text: what the customer is billed on."""
    ref: int | None
    """The concatenation reference of a multipart message; None for a single part."""
    ref_bits: RefBits
    segments: tuple[Segment, ...]


def choose_alphabet(text: str) -> Alphabet:
    return "gsm7" if gsm0338.is_gsm7(text) else "ucs2"


def units_of(text: str, alphabet: Alphabet) -> int:
    if alphabet == "gsm7":
        return gsm0338.septet_count(text)
    return len(text.encode("utf-16-be", errors="surrogatepass")) // 2


def segments_needed(text: str, ref_bits: RefBits = 8) -> int:
    """How many parts `text` takes (before any cap), without needing a reference."""
    return len(_split(text, choose_alphabet(text), ref_bits, ref=0))


def encode_message(
    text: str, ref: int, ref_bits: RefBits = 8, max_segments: int = MAX_SEGMENTS
) -> EncodedMessage:
    """The submit_sm parts for `text`. `ref` (from `ReferenceBook.allocate`) is used only when it takes more
    than one part. Raises `EncodeError` for an empty text, a lone surrogate or a text over `max_segments`."""
    if not 1 <= max_segments <= CONCAT_LIMIT:
        raise EncodeError(f"max_segments is {max_segments}; it must be 1-{CONCAT_LIMIT}")
    if not text:
        raise EncodeError("the text is empty")
    for i, ch in enumerate(text):
        if 0xD800 <= ord(ch) <= 0xDFFF:
            raise EncodeError(f"a lone UTF-16 surrogate U+{ord(ch):04X} at position {i} is not a character")
    alphabet = choose_alphabet(text)
    segments = _split(text, alphabet, ref_bits, ref)
    if len(segments) > max_segments:
        raise EncodeError(
            f"the text needs {len(segments)} parts in {alphabet}; at most {max_segments} are allowed"
        )
    return EncodedMessage(
        alphabet=alphabet,
        data_coding=DATA_CODING[alphabet],
        units=units_of(text, alphabet),
        ref=ref if len(segments) > 1 else None,
        ref_bits=ref_bits,
        segments=tuple(segments),
    )


def _split(text: str, alphabet: Alphabet, ref_bits: RefBits, ref: int) -> list[Segment]:
    method: Literal["udh8", "udh16"] = "udh8" if ref_bits == 8 else "udh16"
    try:
        return split_for_smpp(text, DATA_CODING[alphabet], method, ref)
    except SegmentationError as exc:
        raise EncodeError(exc.reason) from None


def part_limit(alphabet: Alphabet, parts: int, ref_bits: RefBits) -> int:
    """Units one part may carry: for tests and the API's "how many parts" preview."""
    octets = {"gsm7": (160, 153, 152), "ucs2": (140, 134, 132)}[alphabet]
    limit = octets[0] if parts == 1 else octets[1 if ref_bits == 8 else 2]
    return limit // _OCTETS_PER_UNIT[alphabet]
