"""``loom.runtime.testing``: the test harness, shipped as library code.

:class:`ScriptedLLMServer` serves the OpenAI and Anthropic wires over real HTTP on 127.0.0.1,
answering from a script, so tests exercise the real provider code path without a network LLM.
"""

from .._public import set_public_module as _set_public_module
from ._scripted_llm import Delay as Delay
from ._scripted_llm import FailSchedule as FailSchedule
from ._scripted_llm import HTTPError as HTTPError
from ._scripted_llm import RecordedRequest as RecordedRequest
from ._scripted_llm import Reply as Reply
from ._scripted_llm import ScriptedLLMServer as ScriptedLLMServer
from ._scripted_llm import ScriptedToolCall as ScriptedToolCall
from ._scripted_llm import ScriptStep as ScriptStep

__all__ = [
    "Delay",
    "FailSchedule",
    "HTTPError",
    "RecordedRequest",
    "Reply",
    "ScriptStep",
    "ScriptedLLMServer",
    "ScriptedToolCall",
]

_set_public_module(globals())
