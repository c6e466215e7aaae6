"""Word splitting for keyword search, and turning user text into a safe FTS5 query.

The in-memory store's index and the SQLite store's FTS5 ``unicode61 remove_diacritics 2``
tokenizer split text the same way for the scripts that matter most: runs of Unicode letters and
digits are words (``_`` and punctuation separate them), case is folded and Latin diacritics are
dropped. Scripts written without spaces (Chinese, Japanese) become one word per run, in both.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

__all__ = [
    "COMMON_WORDS_FROM",
    "MAX_QUERY_WORDS",
    "fts5_query",
    "informative_words",
    "query_words",
    "words",
]

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


COMMON_WORDS_FROM = 1000
"""Stores with at least this many items drop common query words (see informative_words)."""


def informative_words(candidates: list[str], frequency: Mapping[str, int], total: int) -> list[str]:
    """The query words worth searching for.

    In a store of ``COMMON_WORDS_FROM`` items or more: those in fewer than half of the
    ``total`` items, or all of them when every one is that common. In a smaller store: all.

    BM25's IDF, ``ln((N - n + 0.5) / (n + 0.5))``, is zero or less for a word in half the items
    or more, and FTS5 floors it at 1e-6: such a word adds (almost) nothing to a ranking, yet
    matching it means scoring every item that holds it, which is most of the store. So when a
    query also has rarer words, the common ones are dropped and an item that shares only common
    words with the query is no hit. A small store is cheap to score whole and its counts say
    little (in three items every word is common), so there nothing is dropped. Words missing
    from ``frequency`` are kept.
    """
    if total < COMMON_WORDS_FROM:
        return list(candidates)
    rare = [w for w in candidates if 2 * frequency.get(w, 0) < total]
    return rare or list(candidates)


def fts5_query(text: str) -> str:
    """An FTS5 MATCH expression that finds rows sharing any word with ``text``.

    Every word becomes a quoted string and the strings are OR-ed, so nothing the user typed is
    read as FTS5 syntax (``AND``, ``NEAR``, ``*``, ``^``, ``:``, parentheses, quotes). Returns ""
    when ``text`` has no words; the caller must then not query at all.
    """
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in query_words(text))
