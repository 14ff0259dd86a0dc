"""Extract the one-time code (and its validity) from an SMS.

The rules are data (``data/otp.yaml``); this module compiles them once at import and applies them:
a keyword must name a code, candidates glued to other numbers or next to a trap word (amounts,
card tails, order and phone numbers, durations, dates) are dropped, and the candidate closest to a
keyword in the same sentence wins. When two different codes are equally close the answer is None:
a missing OTP costs the user a glance at the text, a wrong one costs a failed login.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left
from dataclasses import dataclass

from smsflow.avro_range import avro_int
from smsflow.enrich.signature import signature_spans
from smsflow.enrich.window import CONTEXT_CHARS, SCAN_CHARS
from smsflow.enrich.wordlists import LATIN, word_pattern
from smsflow.rulefiles import load_rules


@dataclass(frozen=True, slots=True)
class Otp:
    code: str
    validity_seconds: int | None


@dataclass(frozen=True, slots=True)
class _CodeForm:
    name: str
    regex: re.Pattern[str]
    digits_only: bool  # publish the digits only (123-456 -> 123456, G-123456 -> 123456)
    # Accepted only right after a strong keyword, with filler between: letters+digits (ABC123) and
    # digits in spaced groups (8102 4719) also make product names, promos and phone numbers elsewhere.
    after_keyword: bool


_RULES = load_rules("smsflow.enrich", "otp.yaml")

# Word lists are matched on the lowered text (see wordlists.py); codes are read from the text itself.
_WEAK = {" ".join(str(w).lower().split()) for w in _RULES["keywords"]["weak"]}
_KEYWORDS = [*_RULES["keywords"]["strong"], *_RULES["keywords"]["weak"]]
_KEYWORD = re.compile(word_pattern(_KEYWORDS))
_MARKETING = re.compile(word_pattern(_RULES["marketing_markers"]))
# The next two are matched on the REVERSED text, backwards from a keyword or a candidate: one
# anchored match instead of a search over a window.
_NEGATED = re.compile(  # "promo code", "gift card code"
    rf"[\s\-]*(?:[{LATIN}]+[\s\-]+)?(?:{word_pattern(_RULES['negative_qualifiers'], reverse=True)})"
)
_TRAP_BEFORE = re.compile(  # "尾号 1234", "HK$1,288", "call 95588"
    rf"{_RULES['trap_filler']}{{0,{int(_RULES['trap_gap'])}}}"
    rf"(?:{word_pattern(_RULES['trap_before'], reverse=True)})"
)
_TRAP_AFTER = re.compile(rf"\s{{0,2}}(?:{word_pattern(_RULES['trap_after'])})")
_CLOSE_FILLER = re.compile(str(_RULES["close_filler"]))
_SENTENCE_END = re.compile(str(_RULES["sentence_end"]))
_FORMS = tuple(
    _CodeForm(
        name=str(form["name"]),
        regex=re.compile(rf"(?<![A-Za-z0-9])(?:{form['regex']})(?![A-Za-z0-9])"),
        digits_only=form["normalise"] == "digits",
        after_keyword=bool(form.get("after_keyword", False)),
    )
    for form in _RULES["code_forms"]
)
_MAX_GAP_AFTER = int(_RULES["max_gap_after"])
_MAX_GAP_BEFORE = int(_RULES["max_gap_before"])
_MAX_GAP_CLOSE = int(_RULES["max_gap_close"])
_MIN_DIGITS, _MAX_DIGITS = 4, 8  # a published code of digits has 4 to 8 of them
_WEAK_PENALTY = 8  # a strong keyword 8 characters further away still beats a weak one
_BEFORE_PENALTY = 1  # "验证码是1234" reads more surely than "1234是验证码"
_LOOK_BACK = 32  # characters read backwards for trap words and negative qualifiers
_NOT_DIGITS = re.compile(r"\D")
_OTHER_DIGIT = re.compile(r"(?![0-9])\d")


def _ascii_digit(match: re.Match[str]) -> str:
    return str(unicodedata.decimal(match.group()))


# Each alternative may only start where its run of characters starts (the look-behinds): a search
# that retried from every position inside a long run would scan the run again each time, quadratic
# in its length (a 65 KB run of letters cost seconds).
_URL_OR_EMAIL = re.compile(
    r"(?:https?://|www\.)\S+"
    r"|(?<![\w.+\-])[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+"
    r"|(?<![a-z0-9\-])[a-z0-9\-]+\.(?:cn|com|hk)/\S*"
)
_GLUE = frozenset("-/:.+")
_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_SPACED_DATE_AFTER = re.compile(r" \d{1,2} \d{1,2}(?!\d)")
_SPACED_DATE_BEFORE = re.compile(r"(?<!\d)\d{1,2} \d{1,2} $")

_VALIDITY = _RULES["validity"]
_NUMERALS: dict[str, float] = {str(k): float(v) for k, v in _VALIDITY["numerals"].items()}
_UNITS: dict[str, int] = {str(k).lower(): int(v) for k, v in _VALIDITY["units"].items()}
_NUMBER = r"(?P<n>\d{1,4}|[" + "".join(_NUMERALS) + r"]{1,3})"
_UNIT = rf"(?P<u>{word_pattern(_UNITS)})"
_VALIDITY_PATTERNS = tuple(
    re.compile(str(p).replace("{n}", _NUMBER).replace("{u}", _UNIT)) for p in _VALIDITY["patterns"]
)
# Every validity pattern names an amount and a unit: without one in the text, none can match.
_ANY_DURATION = re.compile(_NUMBER + r"\s*" + _UNIT)

_Keyword = tuple[int, int, bool]  # start, end, strong


def extract_otp(text: str) -> Otp | None:
    """The one-time code in ``text`` and its validity when stated, or None when there is none or
    the text leaves it unsure."""
    if not text:
        return None
    # Read the first SCAN_CHARS characters (window.py says why that is enough), plus a little context
    # so that a code starting in the window is read whole; candidates starting past it are ignored.
    limit = min(len(text), SCAN_CHARS)
    text = text[: SCAN_CHARS + CONTEXT_CHARS]
    if not text.isascii():
        # Full-width digits, colons and brackets read as their ASCII forms; so do the digits of other
        # scripts, which NFKC keeps (Arabic-Indic ١٢٣, Devanagari, Javanese ꧕): a published code is
        # typed into a form that takes 0-9, and `\d` would otherwise glue them to ASCII digits.
        text = _OTHER_DIGIT.sub(_ascii_digit, unicodedata.normalize("NFKC", text))
    lowered = text.lower()
    if len(lowered) != len(text):  # a few characters lower to two ("İ"): keep positions aligned
        lowered = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    backwards = lowered[::-1]
    keywords = _keywords(lowered, backwards)
    if not keywords:
        return None
    if not any(strong for _, _, strong in keywords) and _MARKETING.search(lowered):
        return None

    # Characters that are no candidate: the signature, URLs and e-mail addresses, and every span an
    # earlier code form took. A byte per character: the overlap test costs the candidate's length,
    # not the number of spans so far.
    blocked = bytearray(len(text))
    masked = [(start, end) for start, end, _ in signature_spans(text)]
    if "/" in text or "@" in text or "www" in text:
        masked += [m.span() for m in _URL_OR_EMAIL.finditer(lowered)]
    for start, end in masked:
        blocked[start:end] = b"\x01" * (end - start)
    sentence_ends = [m.start() for m in _SENTENCE_END.finditer(text)]
    keyword_ends = [kw_end for _, kw_end, _ in keywords]

    scores: dict[str, int] = {}
    for form in _FORMS:
        matches = (
            _matches_after_keywords(form, text, keywords) if form.after_keyword else form.regex.finditer(text)
        )
        for match in matches:
            start, end = match.span()
            if start >= limit:
                break
            if blocked.find(1, start, end) != -1:
                continue
            blocked[start:end] = b"\x01" * (end - start)
            if _glued(text, start, end) or _trapped(lowered, backwards, start, end):
                continue
            score = _score(lowered, start, end, form, keywords, keyword_ends, sentence_ends)
            if score is None:
                continue
            code = _NOT_DIGITS.sub("", match.group()) if form.digits_only else match.group()
            if form.digits_only and not _MIN_DIGITS <= len(code) <= _MAX_DIGITS:
                continue  # spaced groups that add up to a phone number or a date, not a code
            if score < scores.get(code, 1 << 30):
                scores[code] = score
    if not scores:
        return None
    ranked = sorted(scores.items(), key=lambda item: item[1])
    if len(ranked) > 1 and ranked[1][1] == ranked[0][1]:
        return None
    return Otp(ranked[0][0], _validity_seconds(lowered, limit))


def _keywords(lowered: str, backwards: str) -> list[_Keyword]:
    found = []
    for match in _KEYWORD.finditer(lowered):
        start = match.start()
        back = len(lowered) - start
        if start and _NEGATED.match(backwards, back, back + _LOOK_BACK):
            continue
        word = " ".join(match.group().split())
        found.append((start, match.end(), word not in _WEAK))
    return found


def _matches_after_keywords(form: _CodeForm, text: str, keywords: list[_Keyword]) -> list[re.Match[str]]:
    """Codes of an ``after_keyword`` form are read only just after a strong keyword."""
    found = []
    for _, kw_end, strong in keywords:
        if not strong:
            continue
        for position in range(kw_end, min(len(text), kw_end + _MAX_GAP_CLOSE + 1)):
            # Every code starts with an ASCII letter or digit that no other one precedes: test that
            # before running the regex (this loop runs for each strong keyword and each such form).
            if text[position] not in _ALNUM or (position and text[position - 1] in _ALNUM):
                continue
            match = form.regex.match(text, position)
            if match is not None:
                found.append(match)
                break
    return found


def _glued(text: str, start: int, end: int) -> bool:
    """Part of a longer number: 2026-03-05, 12:30, 1234.00, 1234,567, 400-820-8820, +852 6123 4567."""
    if start >= 2 and text[start - 1] in _GLUE and text[start - 2].isdigit():
        return True
    if start >= 1 and text[start - 1] == "+":
        return True
    if end + 1 < len(text) and text[end] in _GLUE and text[end + 1].isdigit():
        return True
    # A comma is a thousands separator only before exactly three digits ("验证码332328,15分钟内有效"
    # is a code and a duration).
    after = text[end + 1 : end + 5]
    if text[end : end + 1] == "," and after[:3].isdigit() and not after[3:].isdigit():
        return True
    # Groups of digits separated by single spaces (phone numbers written "2345 6789").
    if start >= 4 and text[start - 1] == " " and text[start - 4 : start - 1].isdigit():
        return True
    if end + 4 <= len(text) and text[end] == " " and text[end + 1 : end + 4].isdigit():
        return True
    # A date written with spaces: "2026 11 30", "30 11 2026".
    if text[end : end + 1] == " " and _SPACED_DATE_AFTER.match(text, end):
        return True
    return text[start - 1 : start] == " " and bool(_SPACED_DATE_BEFORE.search(text, max(0, start - 6), start))


def _trapped(lowered: str, backwards: str, start: int, end: int) -> bool:
    back = len(lowered) - start
    if start and _TRAP_BEFORE.match(backwards, back, back + _LOOK_BACK):
        return True
    return _TRAP_AFTER.match(lowered, end) is not None


def _score(
    lowered: str,
    start: int,
    end: int,
    form: _CodeForm,
    keywords: list[_Keyword],
    keyword_ends: list[int],
    sentence_ends: list[int],
) -> int | None:
    best: int | None = None
    # Only keywords within reach can score; they are in text order, so start at the first one that
    # ends at most _MAX_GAP_AFTER before the code and stop past _MAX_GAP_BEFORE after it.
    first = bisect_left(keyword_ends, start - _MAX_GAP_AFTER)
    for kw_start, kw_end, strong in keywords[first:]:
        if kw_start > end + _MAX_GAP_BEFORE:
            break
        if kw_end <= start:  # keyword, then code
            gap = start - kw_end
            if form.after_keyword and not (
                strong and gap <= _MAX_GAP_CLOSE and _CLOSE_FILLER.fullmatch(lowered, kw_end, start)
            ):
                continue
            if gap > _MAX_GAP_AFTER or _crosses(sentence_ends, kw_end, start):
                continue
            score = gap
        elif end <= kw_start:  # code, then keyword
            gap = kw_start - end
            if form.after_keyword or gap > _MAX_GAP_BEFORE or _crosses(sentence_ends, end, kw_start):
                continue
            score = gap + _BEFORE_PENALTY
        else:
            continue
        if not strong:
            score += _WEAK_PENALTY
        if best is None or score < best:
            best = score
    return best


def _crosses(sentence_ends: list[int], start: int, end: int) -> bool:
    i = bisect_left(sentence_ends, start)
    return i < len(sentence_ends) and sentence_ends[i] < end


def _validity_seconds(lowered: str, limit: int) -> int | None:
    if _ANY_DURATION.search(lowered, 0, limit + CONTEXT_CHARS) is None:
        return None
    for pattern in _VALIDITY_PATTERNS:
        match = pattern.search(lowered)
        if match is None or match.start() >= limit:
            continue
        amount = _number(match.group("n"))
        unit = _UNITS.get(" ".join(match.group("u").split()))
        if amount is None or unit is None or int(amount * unit) <= 0:
            continue  # "0 minutes", "半秒" state no validity (found by the fuzzer)
        # otp_validity_seconds is an Avro int: a validity it cannot hold is not stated.
        return avro_int(int(amount * unit))
    return None


def _number(token: str) -> float | None:
    if token.isdigit():
        return float(token)
    if "十" not in token:
        return _NUMERALS.get(token)
    tens, _, ones = token.partition("十")
    value = (_NUMERALS.get(tens, 0.0) if tens else 1.0) * 10 + (_NUMERALS.get(ones, 0.0) if ones else 0.0)
    return value or None
