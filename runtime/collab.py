"""``loom.runtime.collab``: collaboration primitives over the event bus.

Request/reply, fan-out/fan-in, barriers and contract-net. Every call opens at most one private
inbox subscription and closes it however the call ends (reply, timeout, cancellation, error);
none starts a task. Semantics are written out in ``docs/collab.md``.
"""

from ._collab_barrier import BARRIER_PREFIX as BARRIER_PREFIX
from ._collab_barrier import BarrierCoordinator as BarrierCoordinator
from ._collab_barrier import BarrierResult as BarrierResult
from ._collab_barrier import BarrierStats as BarrierStats
from ._collab_barrier import arrive as arrive
from ._collab_contract import AWARD as AWARD
from ._collab_contract import CFP as CFP
from ._collab_contract import DECLINE as DECLINE
from ._collab_contract import PROPOSE as PROPOSE
from ._collab_contract import REJECT as REJECT
from ._collab_contract import ContractResult as ContractResult
from ._collab_contract import Decision as Decision
from ._collab_contract import Proposal as Proposal
from ._collab_contract import ProposalOutcome as ProposalOutcome
from ._collab_contract import RefusedProposal as RefusedProposal
from ._collab_contract import contract_net as contract_net
from ._collab_contract import decline as decline
from ._collab_contract import metadata_score as metadata_score
from ._collab_contract import propose as propose
from ._collab_errors import BarrierAborted as BarrierAborted
from ._collab_errors import BarrierMismatch as BarrierMismatch
from ._collab_errors import NoResponders as NoResponders
from ._collab_errors import RequestTimeout as RequestTimeout
from ._collab_gather import All as All
from ._collab_gather import FirstK as FirstK
from ._collab_gather import GatherMode as GatherMode
from ._collab_gather import GatherReply as GatherReply
from ._collab_gather import GatherResult as GatherResult
from ._collab_gather import Quorum as Quorum
from ._collab_gather import gather as gather
from ._collab_request import reply as reply
from ._collab_request import request as request

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
