"""The turn update that reports one model call: what a turn's timeline shows per call."""

from __future__ import annotations

import msgspec

from ..llm import Completion

__all__ = ["ModelCall", "model_call"]


class ModelCall(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="model_call"):
    """A model call of a turn has answered (sent once it has, so a call that fails or is
    cancelled sends none: the turn's end says why).

    Attributes:
        iteration: which model call of the turn (from 1).
        model: the model that answered, as its provider named it.
        provider: the provider that served it.
        prompt_tokens: tokens of the request, as the provider counted them.
        completion_tokens: tokens of the answer.
        duration_s: how long the turn waited for it (a stream: to its last chunk).
        finish_reason: why the model stopped.
    """

    iteration: int
    model: str = ""
    provider: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    duration_s: float = 0.0
    finish_reason: str = ""


def model_call(iteration: int, completion: Completion, duration_s: float) -> ModelCall:
    """The update for ``completion``, the answer to a turn's model call ``iteration``."""
    return ModelCall(
        iteration=iteration,
        model=completion.model,
        provider=completion.provider,
        prompt_tokens=completion.usage.prompt_tokens,
        completion_tokens=completion.usage.completion_tokens,
        duration_s=round(duration_s, 6),
        finish_reason=completion.finish_reason,
    )
