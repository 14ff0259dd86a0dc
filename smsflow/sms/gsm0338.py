"""GSM 7-bit default alphabet and its extension table (3GPP TS 23.038 sections 6.2.1 and 6.2.1.1).

SMPP carries GSM text UNPACKED: one septet per octet (`encode_unpacked` / `decode_unpacked`). The air
interface and some HTTP carriers use PACKED septets (`pack_septets` / `unpack_septets`), with fill bits after
a UDH.

Decoding follows the spec's rules for odd input rather than failing, because those rules say what a handset
shows:
- ESC (0x1B) followed by a code with no extension character shows the main-table character for that code
  (23.038 6.2.1.1: "the MS shall display the character shown in the main default 7 bit alphabet table").
- ESC ESC is reserved for a further extension table and "shall display a space" (note 1 of 6.2.1.1).
- A lone ESC at the very end has no extension code after it; like an escape "a receiving entity does not
  understand" (note 1 of 6.2.1) it is shown as a SPACE (U+0020, not NBSP). A trailing ESC usually means the
  message was cut: join all segments before decoding.
- ESC + 0x0A is the page break, returned as FORM FEED (U+000C); ESC + 0x0D (CR2) shows the main-table CR.
Only octets above 0x7F are errors in unpacked data: `errors="strict"` raises `GsmDecodeError`,
`errors="replace"` yields U+FFFD.

0x09 is CAPITAL C WITH CEDILLA as drawn in 23.038 (unicode.org's GSM0338.TXT reads it as the small letter);
only "Ç" encodes to it. National language shift tables (23.038 6.2.1.2) are not supported.
"""

from __future__ import annotations

from typing import Literal

Errors = Literal["strict", "replace"]

ESCAPE = 0x1B
REPLACEMENT_SEPTET = 0x3F  # "?" in both ASCII and the GSM default alphabet

# Index = septet value. Position 0x1B is the escape, never produced by decoding on its own.
DEFAULT_ALPHABET = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
assert len(DEFAULT_ALPHABET) == 128

EXTENSION_TABLE: dict[int, str] = {
    0x0A: "\x0c",  # page break, shown as form feed
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}

_ENCODE: dict[str, bytes] = {ch: bytes([i]) for i, ch in enumerate(DEFAULT_ALPHABET) if i != ESCAPE}
_ENCODE.update({ch: bytes([ESCAPE, code]) for code, ch in EXTENSION_TABLE.items()})


class GsmDecodeError(ValueError):
    def __init__(self, reason: str, position: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.position = position


class GsmEncodeError(ValueError):
    def __init__(self, reason: str, position: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.position = position


def encode_unpacked(text: str, errors: Errors = "strict") -> bytes:
    """Text to septets, one per octet; extension characters take two (ESC + code).

    A character outside both tables raises `GsmEncodeError`, or becomes "?" with `errors="replace"`.
    """
    out = bytearray()
    for i, ch in enumerate(text):
        code = _ENCODE.get(ch)
        if code is None:
            if errors == "strict":
                raise GsmEncodeError(f"{ch!r} (U+{ord(ch):04X}) is not in the GSM 7-bit alphabet", i)
            out.append(REPLACEMENT_SEPTET)
        else:
            out += code
    return bytes(out)


def decode_unpacked(data: bytes, errors: Errors = "strict") -> str:
    """Septets, one per octet, to text (see the module notes for escapes)."""
    out: list[str] = []
    i, n = 0, len(data)
    while i < n:
        b = data[i]
        if b > 0x7F:
            out.append(_bad_octet(b, i, errors))
            i += 1
        elif b != ESCAPE:
            out.append(DEFAULT_ALPHABET[b])
            i += 1
        elif i + 1 == n:
            out.append(" ")
            i += 1
        else:
            c = data[i + 1]
            if c > 0x7F:
                out.append(_bad_octet(c, i + 1, errors))
            elif c == ESCAPE:
                out.append(" ")
            else:
                out.append(EXTENSION_TABLE.get(c, DEFAULT_ALPHABET[c]))
            i += 2
    return "".join(out)


def _bad_octet(b: int, position: int, errors: Errors) -> str:
    if errors == "strict":
        raise GsmDecodeError(f"octet 0x{b:02X} at {position} is not a 7-bit GSM code", position)
    return "\ufffd"


def septet_count(text: str) -> int:
    """Septets `text` needs in the GSM 7-bit alphabet (extension characters count two)."""
    return len(encode_unpacked(text))


def is_gsm7(text: str) -> bool:
    return all(ch in _ENCODE for ch in text)


def pack_septets(septets: bytes, fill_bits: int = 0) -> bytes:
    """Pack 7-bit values into octets, least significant bit first (23.038 6.1.2.1.1).

    `fill_bits` (0-6) zero bits come first, to start the text on a septet boundary after a UDH.
    """
    if not 0 <= fill_bits <= 6:
        raise ValueError("fill_bits must be 0-6")
    out = bytearray()
    acc, nbits = 0, fill_bits
    for s in septets:
        if s > 0x7F:
            raise ValueError(f"septet value 0x{s:02X} exceeds 7 bits")
        acc |= s << nbits
        nbits += 7
        while nbits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            nbits -= 8
    if nbits:
        out.append(acc & 0xFF)
    return bytes(out)


def unpack_septets(data: bytes, count: int | None = None, fill_bits: int = 0) -> bytes:
    """Unpack octets into one septet per octet.

    `count` is the number of septets (an SMS's UDL). Without it, every whole septet is returned, so seven
    octets give eight septets: the last one is 0x00 ("@") when only seven were packed, the ambiguity that
    23.038 resolves with UDL (or CR padding for USSD).
    """
    if not 0 <= fill_bits <= 6:
        raise ValueError("fill_bits must be 0-6")
    available = max(0, (len(data) * 8 - fill_bits) // 7)
    if count is None:
        count = available
    elif count > available:
        raise GsmDecodeError(f"{count} septets do not fit in {len(data)} octets", len(data))
    value = int.from_bytes(data, "little") >> fill_bits
    return bytes((value >> (7 * k)) & 0x7F for k in range(count))


def encode_packed(text: str, fill_bits: int = 0, errors: Errors = "strict") -> bytes:
    return pack_septets(encode_unpacked(text, errors), fill_bits)


def decode_packed(
    data: bytes, count: int | None = None, fill_bits: int = 0, errors: Errors = "strict"
) -> str:
    return decode_unpacked(unpack_septets(data, count, fill_bits), errors)
