"""Compile word lists into fast regexes.

A plain alternation ``a|b|c`` of a hundred words makes ``re`` try every word at every position; the
same words as a trie (``v(?:erif(?:ication|y) code|alidation code)``) fail on the first character.
Words that start (end) with a Latin letter get a word boundary there, so "code" does not match
inside "barcode", while "验证码" matches inside any run of CJK text.

``reverse=True`` builds the pattern of the reversed words, to match backwards from a position with
one anchored ``match`` on the reversed text instead of a ``search`` over a window.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

LATIN = r"A-Za-z\u00c0-\u024f\u1e00-\u1eff\u0400-\u04ff"
_IS_LATIN = re.compile(f"[{LATIN}]")

_Trie = dict[str, "_Trie"]
_END = ""


def word_pattern(words: Iterable[str], reverse: bool = False) -> str:
    """Regex source matching any of ``words``, lowercased: match it against ``text.lower()`` (a
    case-sensitive regex on lowered text runs about twice as fast as re.IGNORECASE)."""
    words = list(words)
    for word in words:
        if not isinstance(word, str):
            # YAML reads a bare on/off/yes/no as a boolean: "on" became the word "true" once.
            raise ValueError(f"word list entry {word!r} is not a string: quote it in the rule file")
    groups: dict[tuple[bool, bool], list[str]] = {}
    for word in {w.lower() for w in words if w}:
        key = (bool(_IS_LATIN.match(word[0])), bool(_IS_LATIN.match(word[-1])))
        groups.setdefault(key, []).append(word[::-1] if reverse else word)
    parts = []
    for (starts_latin, ends_latin), members in sorted(groups.items()):
        body = _trie_source(_trie(members))
        before, after = (ends_latin, starts_latin) if reverse else (starts_latin, ends_latin)
        if before:
            body = f"(?<![{LATIN}]){body}"
        if after:
            body = f"{body}(?![{LATIN}])"
        parts.append(f"(?:{body})")
    return "|".join(parts) if parts else "(?!)"


def _trie(words: list[str]) -> _Trie:
    root: _Trie = {}
    for word in words:
        node = root
        for char in word:
            node = node.setdefault(char, {})
        node[_END] = {}
    return root


def _trie_source(node: _Trie) -> str:
    branches = [_char(char) + _trie_source(child) for char, child in sorted(node.items()) if char != _END]
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    if _END in node:
        # Greedy: the longest word wins, as with a longest-first alternation.
        return f"(?:{body})?"
    return body


def _char(char: str) -> str:
    return r"\s+" if char == " " else re.escape(char)
