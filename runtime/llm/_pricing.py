"""What a model call costs: the prices a budget's estimate is made at, and the price of an
answer at the provider that served it.

A model in this process has its prices in its configuration (``cost_per_1k_input``,
``cost_per_1k_output`` of ``[llm.<name>]``, in its :class:`ProviderProfile`). A model in
another process (``ServerLLM``: the server's router through ``loom.v1.LLM``) does not: it
says its prices when asked (:class:`PricedElsewhere`), and its answers carry their price
(:attr:`Completion.cost_usd`), worked out where the provider that served the call is known.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import msgspec

from ._config import ProviderProfile
from ._protocol import LLM
from ._router import ModelRouter
from ._types import Completion

__all__ = ["ModelPrices", "PricedElsewhere", "completion_cost", "model_prices"]


class ModelPrices(msgspec.Struct, frozen=True, kw_only=True):
    """The prices a call's estimate is made at.

    Attributes:
        cost_per_1k_input: USD per 1000 prompt tokens (through a router: its dearest
            provider's, since any of them may serve the call).
        cost_per_1k_output: USD per 1000 generated tokens (the same).
        max_output_tokens: the cap on generated tokens of a call that sets none (through a
            router: the largest); ``None``: unknown.
    """

    cost_per_1k_input: float = 0.0
    cost_per_1k_output: float = 0.0
    max_output_tokens: int | None = None


@runtime_checkable
class PricedElsewhere(Protocol):
    """A model whose prices are kept in another process: it says them when asked, and its
    answers carry their price (:attr:`Completion.cost_usd`)."""

    async def prices(self) -> ModelPrices | None:
        """Its prices, or ``None`` when it does not know them (its answers then carry no
        price either: only tokens are counted).

        Raises:
            LoomError: they could not be asked (the budget then refuses the call).
        """
        ...


def _models(llm: LLM) -> list[object]:
    return list(llm.providers.values()) if isinstance(llm, ModelRouter) else [llm]


def model_prices(llm: LLM) -> ModelPrices:
    """The prices of a model in this process, from its configuration (through a router: the
    dearest of its providers, and the largest output cap)."""
    profiles = [getattr(m, "profile", None) for m in _models(llm)]
    priced = [p for p in profiles if isinstance(p, ProviderProfile)]
    caps = [getattr(getattr(m, "config", None), "max_output_tokens", None) for m in _models(llm)]
    known = [c for c in caps if isinstance(c, int)]
    return ModelPrices(
        cost_per_1k_input=max((p.cost_per_1k_input for p in priced), default=0.0),
        cost_per_1k_output=max((p.cost_per_1k_output for p in priced), default=0.0),
        max_output_tokens=max(known) if known else None,
    )


def completion_cost(llm: LLM, completion: Completion) -> float:
    """What ``completion`` cost in USD: its own price when it carries one, else its usage at
    the prices of the provider of ``llm`` that served it (0 when none is known)."""
    if completion.cost_usd is not None:
        return completion.cost_usd
    if isinstance(llm, ModelRouter):
        served = llm.providers.get(completion.provider)
        profile = None if served is None else served.profile
    else:
        profile = getattr(llm, "profile", None)
    if not isinstance(profile, ProviderProfile):
        return 0.0
    usage = completion.usage
    return (
        usage.prompt_tokens * profile.cost_per_1k_input
        + usage.completion_tokens * profile.cost_per_1k_output
    ) / 1000
