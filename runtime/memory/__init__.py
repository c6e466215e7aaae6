"""``loom.runtime.memory``: an agent's memory and the prompt it is built into.

Record what happens in an :class:`AgentContext` (over a :class:`MemoryStore`: the durable
:class:`SQLiteStore` by default, or :class:`InMemoryStore`), then ``build`` the
:mod:`loom.runtime.llm` messages that fit a token budget: the newest turns whole, tool calls
always with their results, and older items brought back by keyword, importance and recency.
See docs/memory.md.
"""

from .._public import set_public_module as _set_public_module
from ._agent_context import MEMORY_HEADER as MEMORY_HEADER
from ._agent_context import AgentContext as AgentContext
from ._errors import BudgetTooSmall as BudgetTooSmall
from ._errors import ContextError as ContextError
from ._errors import DuplicateItem as DuplicateItem
from ._errors import InvalidItem as InvalidItem
from ._errors import SchemaVersionError as SchemaVersionError
from ._errors import StoreClosed as StoreClosed
from ._errors import StoreOpenError as StoreOpenError
from ._items import KINDS as KINDS
from ._items import ROLES as ROLES
from ._items import ContextItem as ContextItem
from ._items import ItemKind as ItemKind
from ._items import Prompt as Prompt
from ._items import Role as Role
from ._items import ScoredItem as ScoredItem
from ._items import arguments_text as arguments_text
from ._items import tool_call_of as tool_call_of
from ._memory import InMemoryStore as InMemoryStore
from ._offload import Offloaded as Offloaded
from ._offload import Offloader as Offloader
from ._retrieval import DEFAULT_KIND_WEIGHTS as DEFAULT_KIND_WEIGHTS
from ._retrieval import RankedItem as RankedItem
from ._retrieval import RetrievalPolicy as RetrievalPolicy
from ._retrieval import rank as rank
from ._sqlite import DEFAULT_FILENAME as DEFAULT_FILENAME
from ._sqlite import SCHEMA_VERSION as SCHEMA_VERSION
from ._sqlite import SQLiteStore as SQLiteStore
from ._store import MemoryStore as MemoryStore
from ._tokens import MESSAGE_OVERHEAD_TOKENS as MESSAGE_OVERHEAD_TOKENS
from ._tokens import HeuristicTokenCounter as HeuristicTokenCounter
from ._tokens import TokenCounter as TokenCounter
from ._tokens import message_tokens as message_tokens
from ._words import fts5_query as fts5_query

__all__ = [
    "DEFAULT_FILENAME",
    "DEFAULT_KIND_WEIGHTS",
    "KINDS",
    "MEMORY_HEADER",
    "MESSAGE_OVERHEAD_TOKENS",
    "ROLES",
    "SCHEMA_VERSION",
    "AgentContext",
    "BudgetTooSmall",
    "ContextError",
    "ContextItem",
    "DuplicateItem",
    "HeuristicTokenCounter",
    "InMemoryStore",
    "InvalidItem",
    "ItemKind",
    "MemoryStore",
    "Offloaded",
    "Offloader",
    "Prompt",
    "RankedItem",
    "RetrievalPolicy",
    "Role",
    "SQLiteStore",
    "SchemaVersionError",
    "ScoredItem",
    "StoreClosed",
    "StoreOpenError",
    "TokenCounter",
    "arguments_text",
    "fts5_query",
    "message_tokens",
    "rank",
    "tool_call_of",
]

_set_public_module(globals())
