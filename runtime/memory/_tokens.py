"""Token counting: the :class:`TokenCounter` seam and :class:`HeuristicTokenCounter`, the default.

Nothing here downloads a tokenizer. The heuristic counts what BPE tokenizers are sensitive to,
with weights fitted (non-negative least squares on relative error) against OpenAI's
``cl100k_base`` over Python source, English prose, JSON and short texts in fourteen languages:

* a Latin word is about one token, plus a quarter per letter past six, plus extra for
  accented letters (they fall outside the merged English vocabulary);
* digits go in groups of three (that is how cl100k/o200k split numbers);
* a run of punctuation is about three quarters of a token; a line break (with the indentation
  around it) about two; other runs of several spaces about three;
* letters of other scripts cost per character: Chinese/Japanese 1.0, Korean 1.15, Greek 1.1,
  Arabic/Hebrew 0.9, Indic scripts 1.1, Cyrillic 0.5, anything else alphabetic 0.5.

Measured error against ``cl100k_base`` (see tests/runtime/memory/test_tokens.py): within a few
per cent on English, code and JSON, within about 25% on other languages. ``o200k_base`` (newer
OpenAI models) needs fewer tokens for non-Latin scripts, so there the estimate runs high; that
is the safe side for a budget. When an exact count matters, plug in a real tokenizer through
:class:`TokenCounter`.
"""

from __future__ import annotations

import re
from typing import Protocol, runtime_checkable

from ..llm import AssistantMessage, Message, ToolMessage
from ._items import arguments_text

__all__ = [
    "MESSAGE_OVERHEAD_TOKENS",
    "HeuristicTokenCounter",
    "TokenCounter",
    "message_tokens",
]

MESSAGE_OVERHEAD_TOKENS = 4
"""What every chat message costs besides its text: role markers and separators (OpenAI's chat
format spends 3-4 per message)."""


@runtime_checkable
class TokenCounter(Protocol):
    """Counts the tokens of a text. Must be pure and fast: a build calls it once per item."""

    def count(self, text: str) -> int:
        """The number of tokens ``text`` encodes to (an estimate is fine; >= 0)."""
        ...


_LATIN_WORD = re.compile(r"[A-Za-z\u00c0-\u024f]+")
_ACCENTED = re.compile(r"[\u00c0-\u024f]")
_DIGITS = re.compile(r"\d+")
_LINE_BREAK = re.compile(r"\s*\n\s*")
# Between two visible characters only: indentation and trailing blanks belong to a line break.
_SPACE_RUN = re.compile(r"(?<=\S)(?:[ \t\f\v]{2,}|[\t\f\v])(?=\S)")
_PUNCT = re.compile(r"[^\w\s]+|_+")
_CJK = re.compile(r"[\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef\U00020000-\U0002ffff]")
_HANGUL = re.compile(r"[\uac00-\ud7af\u1100-\u11ff]")
_CYRILLIC = re.compile(r"[\u0400-\u052f]")
_GREEK = re.compile(r"[\u0370-\u03ff]")
_ARABIC_HEBREW = re.compile(r"[\u0590-\u06ff]")
_INDIC = re.compile(r"[\u0900-\u0dff]")
_OTHER_ALPHA = re.compile(r"[^\W\d_\x00-\u024f]")


class HeuristicTokenCounter:
    """The default :class:`TokenCounter`: a tokenizer-free estimate (see the module docs).

    Each feature is counted by one regular-expression scan in C; pure-ASCII text skips the
    scans for other scripts. About a microsecond per ten characters.
    """

    __slots__ = ()

    def count(self, text: str) -> int:
        """Estimated ``cl100k_base`` tokens of ``text``."""
        if not text:
            return 0
        latin = _LATIN_WORD.findall(text)
        total = 0.9 * len(latin) + 0.25 * sum(len(w) - 6 for w in latin if len(w) > 6)
        total += 1.25 * sum((len(d) + 2) // 3 for d in _DIGITS.findall(text))
        total += 1.8 * len(_LINE_BREAK.findall(text))
        total += 2.8 * len(_SPACE_RUN.findall(text))
        total += 0.75 * len(_PUNCT.findall(text))
        if not text.isascii():
            total += 1.5 * len(_ACCENTED.findall(text))
            cjk = len(_CJK.findall(text))
            hangul = len(_HANGUL.findall(text))
            cyrillic = len(_CYRILLIC.findall(text))
            greek = len(_GREEK.findall(text))
            arabic = len(_ARABIC_HEBREW.findall(text))
            indic = len(_INDIC.findall(text))
            other = len(_OTHER_ALPHA.findall(text)) - cjk - hangul - cyrillic - greek - arabic
            other -= indic
            total += 1.0 * cjk + 1.15 * hangul + 1.1 * greek + 0.9 * arabic + 1.1 * indic
            total += 0.5 * cyrillic + 0.5 * max(other, 0)
        return max(round(total), 1)


def message_tokens(message: Message, counter: TokenCounter) -> int:
    """Tokens a message costs: its text, its tool calls (or the tool's name), and the
    per-message overhead."""
    total = MESSAGE_OVERHEAD_TOKENS + counter.count(message.content)
    if isinstance(message, ToolMessage):
        total += counter.count(message.name) + 2
    elif isinstance(message, AssistantMessage):
        for call in message.tool_calls:
            # id, name and arguments, plus the structure around them.
            total += counter.count(call.name) + counter.count(arguments_text(call)) + 8
    return total
