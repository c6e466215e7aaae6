"""How a turn asks the model to work: the strategies and the text format for tool calls.

Three strategies (see ``docs/cognition.md``):

* ``react``: think and act in a loop. Tools go to the model natively (function calling) or,
  for a model without tool calling, described in the system prompt with a text format that
  :func:`parse_text_step` reads back;
* ``single_shot``: one model call without tools; its text is the answer;
* ``chain_of_thought``: one model call without tools, asked to reason step by step and to
  end with a ``Final answer:`` line; :func:`split_final_answer` separates the two.

Everything here is pure: no I/O, no model calls.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Sequence
from typing import Any, Literal

import msgspec

from ..llm import BadToolCall, MalformedToolArguments, ToolCall, ToolSpec, UnknownTool

__all__ = [
    "COT_INSTRUCTIONS",
    "FINAL_ANSWER",
    "StrategyName",
    "TextStep",
    "ToolCalling",
    "parse_text_step",
    "split_final_answer",
    "text_tools_instructions",
]

StrategyName = Literal["react", "single_shot", "chain_of_thought"]
"""How a turn works: see the module docstring."""

ToolCalling = Literal["auto", "native", "text"]
"""How ``react`` offers tools: ``native`` function calling, the ``text`` format, or ``auto``
(native unless the model's provider profile says it cannot call tools)."""

FINAL_ANSWER = "Final answer:"
"""The marker that starts the answer in the ``chain_of_thought`` and text formats."""

COT_INSTRUCTIONS = (
    "Think the problem through step by step before you answer. Write your reasoning first; "
    f"then write the answer alone on a last line that starts with '{FINAL_ANSWER}'."
)

_TEXT_FORMAT = """You can use tools. To call one, write exactly:

Action: <tool name>
Action Input: <the arguments, as one JSON object>

Several Action blocks in one answer are run together. After your Action blocks, stop: the \
results come back to you as Observation messages. When you have the answer, write:

{marker} <the answer>

The tools:
{tools}"""

_ACTION = re.compile(
    r"^[ \t>*_`]*action[ \t*_`]*:[ \t]*(?P<name>.*)$", re.IGNORECASE | re.MULTILINE
)
_INPUT = re.compile(r"^[ \t>*_`]*action[ \t_]*input[ \t*_`]*:", re.IGNORECASE | re.MULTILINE)
_FINAL = re.compile(r"^[ \t>*_`]*final[ \t_]*answer[ \t*_`]*:", re.IGNORECASE | re.MULTILINE)
_OBSERVATION = re.compile(r"^[ \t>*_`]*observation[ \t*_`]*:", re.IGNORECASE | re.MULTILINE)
_decoder = json.JSONDecoder()


def text_tools_instructions(tools: Sequence[ToolSpec]) -> str:
    """The system prompt section that teaches the text format and lists ``tools``."""
    lines = []
    for tool in tools:
        schema = msgspec.json.encode(tool.parameters_schema).decode()
        lines.append(
            f"- {tool.name}: {tool.description or '(no description)'}\n  arguments: {schema}"
        )
    return _TEXT_FORMAT.format(marker=FINAL_ANSWER, tools="\n".join(lines))


def split_final_answer(text: str) -> tuple[str, str]:
    """``(reasoning, answer)`` of a ``chain_of_thought`` answer.

    The answer is what follows the last ``Final answer:`` marker (any case); without one, the
    whole text is the answer and there is no separate reasoning.
    """
    marks = list(_FINAL.finditer(text))
    if not marks:
        return "", text.strip()
    last = marks[-1]
    return text[: last.start()].strip(), text[last.end() :].strip()


class TextStep(msgspec.Struct, frozen=True, kw_only=True):
    """What one answer in the text format asks for.

    Attributes:
        calls: the tool calls, in order (each with ``error`` set when it cannot be run).
        answer: the final answer when there are no calls.
    """

    calls: tuple[ToolCall, ...] = ()
    answer: str = ""


def parse_text_step(text: str, names: Collection[str], *, call_prefix: str) -> TextStep:
    """Read an answer written in the text format; never raises.

    * ``Action:`` blocks before any ``Final answer:`` are tool calls. Whatever the model wrote
      after its last block (an ``Observation:`` it made up, an early final answer) is ignored:
      it has not seen the results yet.
    * An action's input is the first JSON object after ``Action Input:`` (code fences and
      surrounding prose are tolerated); a missing input means ``{}``. Input that is not a JSON
      object, or a name not in ``names``, makes a call with ``error`` set, which the loop
      answers with the error so the model can correct itself.
    * Otherwise the answer is what follows ``Final answer:``, or, when the model ignored the
      format, its whole text.

    Args:
        text: the model's answer.
        names: the tools offered.
        call_prefix: call ids are ``{call_prefix}{index}``.
    """
    final = _FINAL.search(text)
    limit = final.start() if final is not None else len(text)
    actions = [m for m in _ACTION.finditer(text) if m.start() < limit]
    if not actions:
        if final is not None:
            return TextStep(answer=text[final.end() :].strip())
        return TextStep(answer=text.strip())
    calls = []
    for i, match in enumerate(actions):
        end = actions[i + 1].start() if i + 1 < len(actions) else limit
        if (observation := _OBSERVATION.search(text, match.end(), end)) is not None:
            end = observation.start()
        name = match.group("name").strip(" \t`'\"*_")
        calls.append(_call(f"{call_prefix}{i}", name, text[match.end() : end], names))
    return TextStep(calls=tuple(calls))


def _call(call_id: str, name: str, block: str, names: Collection[str]) -> ToolCall:
    given = _INPUT.search(block)
    raw = block[given.end() :].strip() if given is not None else ""
    error: BadToolCall
    if name not in names:
        error = UnknownTool(
            f"there is no tool {name!r}; the tools are: {', '.join(sorted(names)) or 'none'}",
            call_id=call_id,
            tool_name=name or "?",
        )
        return ToolCall(id=call_id, name=name or "?", raw_arguments=raw, error=error)
    arguments, problem = _json_object(raw)
    if arguments is None:
        error = MalformedToolArguments(
            f"the Action Input of {name!r} is {problem}: {raw[:200]!r}; write one JSON object",
            call_id=call_id,
            tool_name=name,
            raw_arguments=raw,
        )
        return ToolCall(id=call_id, name=name, raw_arguments=raw, error=error)
    return ToolCall(id=call_id, name=name, arguments=arguments, raw_arguments=raw)


def _json_object(raw: str) -> tuple[dict[str, Any] | None, str]:
    stripped = raw.strip().strip("`").strip()
    if stripped.lower().startswith("json"):
        stripped = stripped[4:].strip()
    if not stripped:
        return {}, ""
    start = stripped.find("{")
    if start < 0:
        return None, "not a JSON object"
    try:
        value, _ = _decoder.raw_decode(stripped, start)
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON ({exc.msg})"
    if not isinstance(value, dict):
        return None, "not a JSON object"
    return value, ""
