"""Retrieval: which older items come back into a prompt, and in what order of preference.

Candidates are the items a keyword search finds for the query (the goal, or the newest user
message) plus the *pinned-ish* items (importance at or above ``RetrievalPolicy.recall_importance``)
even without a keyword match. Each candidate is scored in 0..1:

    score = keyword_weight    * keyword     (BM25 relative to the best hit of this search: 0..1)
          + importance_weight * importance  (the item's own 0..1)
          + recency_weight    * recency     (0.5 ** (age / half_life): 1 now, 0.5 one half-life ago)
          + kind_weight       * kind        (per kind, 0..1: messages over tool chatter)

with the four weights summing to 1 by default. Ties go to the newer item. The score only
orders candidates; what fits the budget is decided by the window (see ``_window``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Literal

import msgspec

from .._errors import InvalidArgument
from ._items import ContextItem, ItemKind, ScoredItem

__all__ = ["DEFAULT_KIND_WEIGHTS", "RankedItem", "RetrievalPolicy", "rank"]

DEFAULT_KIND_WEIGHTS: dict[ItemKind, float] = {
    "message": 1.0,
    "observation": 0.8,
    "event": 0.7,
    "tool_result": 0.6,
    "tool_call": 0.3,
}
"""What each kind of item is worth to a prompt by default: what was said outranks tool chatter,
and a tool call alone (arguments without the result) is worth least."""


def _default_kind_weights() -> dict[ItemKind, float]:
    return dict(DEFAULT_KIND_WEIGHTS)


class RetrievalPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How a build brings older items back. The defaults suit a chat agent.

    Attributes:
        keyword_weight: weight of keyword relevance in the score.
        importance_weight: weight of the item's importance.
        recency_weight: weight of recency.
        kind_weight: weight of the per-kind value from ``kind_weights``.
        kind_weights: value of each kind, 0..1; kinds left out are worth 0.
        half_life_ms: age at which recency has halved (default one day).
        recall_importance: items at least this important are candidates without a keyword
            match (default 0.8; above 1 turns it off).
        scope: ``"thread"`` retrieves from the conversation being built only; ``"agent"`` from
            all the agent's threads (long-term memory across conversations).
        max_candidates: at most this many keyword hits, and as many important items, are
            considered per build.
        budget_share: the share of the budget (after the system text) held back from the recent
            window for retrieved items when the conversation no longer fits whole; what they
            leave unused is not given back.
        max_item_chars: a retrieved item's text is cut to this many characters.
    """

    keyword_weight: float = 0.5
    importance_weight: float = 0.25
    recency_weight: float = 0.15
    kind_weight: float = 0.1
    kind_weights: dict[ItemKind, float] = msgspec.field(default_factory=_default_kind_weights)
    half_life_ms: int = 86_400_000
    recall_importance: float = 0.8
    scope: Literal["thread", "agent"] = "thread"
    max_candidates: int = 50
    budget_share: float = 0.2
    max_item_chars: int = 1000

    def __post_init__(self) -> None:
        for name in ("keyword_weight", "importance_weight", "recency_weight", "kind_weight"):
            value = getattr(self, name)
            if not (value >= 0.0 and math.isfinite(value)):
                raise InvalidArgument(f"{name} must be a finite number >= 0, got {value!r}")
        for kind, value in self.kind_weights.items():
            if not (0.0 <= value <= 1.0):
                raise InvalidArgument(f"kind_weights[{kind!r}] must be in 0..1, got {value!r}")
        if self.half_life_ms <= 0:
            raise InvalidArgument(f"half_life_ms must be > 0, got {self.half_life_ms}")
        if not (0.0 <= self.budget_share <= 1.0):
            raise InvalidArgument(f"budget_share must be in 0..1, got {self.budget_share!r}")
        if self.max_candidates < 0:
            raise InvalidArgument(f"max_candidates must be >= 0, got {self.max_candidates}")
        if self.max_item_chars < 1:
            raise InvalidArgument(f"max_item_chars must be >= 1, got {self.max_item_chars}")
        if self.scope not in ("thread", "agent"):
            raise InvalidArgument(f"scope must be 'thread' or 'agent', got {self.scope!r}")


class RankedItem(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A retrieval candidate with its score and the parts of it.

    Attributes:
        item: the stored item.
        score: the combined score, larger is better.
        keyword: the keyword part before weighting (0..1; 0 without a keyword match).
        recency: the recency part before weighting (0..1).
    """

    item: ContextItem
    score: float
    keyword: float
    recency: float


def rank(
    hits: Sequence[ScoredItem],
    important: Iterable[ContextItem],
    policy: RetrievalPolicy,
    now_ms: int,
) -> list[RankedItem]:
    """Score and order candidates, best first; an item found both ways appears once."""
    best = max((h.score for h in hits), default=0.0)
    keyword: dict[str, float] = {h.item.id: h.score / best if best > 0 else 0.0 for h in hits}
    items: dict[str, ContextItem] = {h.item.id: h.item for h in hits}
    for item in important:
        items.setdefault(item.id, item)
    ranked = []
    for item in items.values():
        age = max(now_ms - item.timestamp_ms, 0)
        recency = 0.5 ** (age / policy.half_life_ms)
        kw = keyword.get(item.id, 0.0)
        score = (
            policy.keyword_weight * kw
            + policy.importance_weight * item.importance
            + policy.recency_weight * recency
            + policy.kind_weight * policy.kind_weights.get(item.kind, 0.0)
        )
        ranked.append(RankedItem(item=item, score=score, keyword=kw, recency=recency))
    ranked.sort(key=lambda r: (-r.score, -r.item.seq))
    return ranked
