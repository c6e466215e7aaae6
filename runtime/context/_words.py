"""Word splitting for keyword search, and turning user text into a safe FTS5 query.

The in-memory store's index and the SQLite store's FTS5 ``unicode61 remove_diacritics 2``
tokenizer split text the same way for the scripts that matter most: runs of Unicode letters and
digits are words (``_`` and punctuation separate them), case is folded and Latin diacritics are
dropped. Scripts written without spaces (Chinese, Japanese) become one word per run, in both.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["MAX_QUERY_WORDS", "fts5_query", "query_words", "words"]

MAX_QUERY_WORDS = 32
"""A query keeps at most this many distinct words (the first ones): a pasted page as a goal must
not turn into a query that scans the whole index thirty thousand times."""

_WORD = re.compile(r"[^\W_]+")


def _fold(word: str) -> str:
    word = word.lower()
    if word.isascii():
        return word
    # NFKD splits "é" into "e" and a combining accent, which is then dropped.
    decomposed = unicodedata.normalize("NFKD", word)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def words(text: str) -> list[str]:
    """The folded words of ``text``, in order, repeats kept."""
    return [w for w in (_fold(m) for m in _WORD.findall(text)) if w]


def query_words(text: str) -> list[str]:
    """The distinct folded words of ``text``, first occurrence order, at most MAX_QUERY_WORDS."""
    return list(dict.fromkeys(words(text)))[:MAX_QUERY_WORDS]


def fts5_query(text: str) -> str:
    """An FTS5 MATCH expression that finds rows sharing any word with ``text``.

    Every word becomes a quoted string and the strings are OR-ed, so nothing the user typed is
    read as FTS5 syntax (``AND``, ``NEAR``, ``*``, ``^``, ``:``, parentheses, quotes). Returns ""
    when ``text`` has no words; the caller must then not query at all.
    """
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in query_words(text))
