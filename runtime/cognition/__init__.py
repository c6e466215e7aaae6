"""``loom.runtime.cognition``: the perceive-think-act loop.

A :class:`Loop` runs :class:`Turn`\\ s: perceive (record the goal in the agent's context), think
(build the prompt from the context, call the model with the tools' schemas), act (run the tool
calls, in parallel up to a cap, each with a timeout, failures as error results), until the
model answers or the iteration budget is spent. Each turn ends with a :class:`TurnOutcome`.
A :class:`Toolset` gathers the tools: registries, loose tools (MCP), other agents'
capabilities (:class:`PeerCapabilities`). Semantics in ``docs/cognition.md``.
"""

from .._public import set_public_module as _set_public_module
from ._approval import ApprovalGate as ApprovalGate
from ._approval import SavedTurn as SavedTurn
from ._ask_user import AskUser as AskUser
from ._loop import Loop as Loop
from ._loop import LoopConfig as LoopConfig
from ._loop import OutcomeKind as OutcomeKind
from ._loop import TextChunk as TextChunk
from ._loop import ToolFinished as ToolFinished
from ._loop import ToolOutput as ToolOutput
from ._loop import ToolResult as ToolResult
from ._loop import ToolStarted as ToolStarted
from ._loop import Turn as Turn
from ._loop import TurnOutcome as TurnOutcome
from ._loop import TurnUpdate as TurnUpdate
from ._model_call import ModelCall as ModelCall
from ._strategies import FINAL_ANSWER as FINAL_ANSWER
from ._strategies import StrategyName as StrategyName
from ._strategies import TextStep as TextStep
from ._strategies import ToolCalling as ToolCalling
from ._strategies import parse_text_step as parse_text_step
from ._strategies import split_final_answer as split_final_answer
from ._toolset import PeerCapabilities as PeerCapabilities
from ._toolset import PeerSource as PeerSource
from ._toolset import RemotePeers as RemotePeers
from ._toolset import ToolCaller as ToolCaller
from ._toolset import Toolset as Toolset
from ._toolset import TurnTools as TurnTools

__all__ = [
    "FINAL_ANSWER",
    "ApprovalGate",
    "AskUser",
    "Loop",
    "LoopConfig",
    "ModelCall",
    "OutcomeKind",
    "PeerCapabilities",
    "PeerSource",
    "RemotePeers",
    "SavedTurn",
    "StrategyName",
    "TextChunk",
    "TextStep",
    "ToolCaller",
    "ToolCalling",
    "ToolFinished",
    "ToolOutput",
    "ToolResult",
    "ToolStarted",
    "Toolset",
    "Turn",
    "TurnOutcome",
    "TurnTools",
    "TurnUpdate",
    "parse_text_step",
    "split_final_answer",
]

_set_public_module(globals())
