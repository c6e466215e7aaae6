"""``loom.runtime.collab``: collaboration primitives over the event bus.

Request/reply, fan-out/fan-in, barriers and contract-net. Every call opens at most one private
inbox subscription and closes it however the call ends (reply, timeout, cancellation, error);
none starts a task. Semantics are written out in ``docs/collab.md``.
"""

from .._public import set_public_module as _set_public_module
from ._barrier import BARRIER_PREFIX as BARRIER_PREFIX
from ._barrier import BarrierCoordinator as BarrierCoordinator
from ._barrier import BarrierResult as BarrierResult
from ._barrier import BarrierStats as BarrierStats
from ._barrier import arrive as arrive
from ._contract import AWARD as AWARD
from ._contract import CFP as CFP
from ._contract import DECLINE as DECLINE
from ._contract import PROPOSE as PROPOSE
from ._contract import REJECT as REJECT
from ._contract import ContractResult as ContractResult
from ._contract import Decision as Decision
from ._contract import Proposal as Proposal
from ._contract import ProposalOutcome as ProposalOutcome
from ._contract import RefusedProposal as RefusedProposal
from ._contract import contract_net as contract_net
from ._contract import decline as decline
from ._contract import metadata_score as metadata_score
from ._contract import propose as propose
from ._errors import BarrierAborted as BarrierAborted
from ._errors import BarrierMismatch as BarrierMismatch
from ._errors import NoResponders as NoResponders
from ._errors import RequestTimeout as RequestTimeout
from ._gather import All as All
from ._gather import FirstK as FirstK
from ._gather import GatherMode as GatherMode
from ._gather import GatherReply as GatherReply
from ._gather import GatherResult as GatherResult
from ._gather import Quorum as Quorum
from ._gather import gather as gather
from ._request import reply as reply
from ._request import request as request

__all__ = [
    "AWARD",
    "BARRIER_PREFIX",
    "CFP",
    "DECLINE",
    "PROPOSE",
    "REJECT",
    "All",
    "BarrierAborted",
    "BarrierCoordinator",
    "BarrierMismatch",
    "BarrierResult",
    "BarrierStats",
    "ContractResult",
    "Decision",
    "FirstK",
    "GatherMode",
    "GatherReply",
    "GatherResult",
    "NoResponders",
    "Proposal",
    "ProposalOutcome",
    "Quorum",
    "RefusedProposal",
    "RequestTimeout",
    "arrive",
    "contract_net",
    "decline",
    "gather",
    "metadata_score",
    "propose",
    "reply",
    "request",
]

_set_public_module(globals())
