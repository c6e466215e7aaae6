"""``loom.runtime.llm``: LLM providers behind one ``LLM`` protocol, and the model router."""

from .._public import set_public_module as _set_public_module
from ..tools import ToolSpec as ToolSpec
from ._anthropic import AnthropicProvider as AnthropicProvider
from ._cache import CachedLLM as CachedLLM
from ._cache import CacheStats as CacheStats
from ._cache import cache_key as cache_key
from ._cache import calling_namespace as calling_namespace
from ._cache import llm_namespace as llm_namespace
from ._cache_store import CACHE_FILENAME as CACHE_FILENAME
from ._cache_store import CacheLimits as CacheLimits
from ._cache_store import CacheStoreError as CacheStoreError
from ._cache_store import ResponseStore as ResponseStore
from ._config import LLMConfig as LLMConfig
from ._config import ProviderConfig as ProviderConfig
from ._config import ProviderProfile as ProviderProfile
from ._config import Secret as Secret
from ._config import load_llm_config as load_llm_config
from ._errors import BadResponse as BadResponse
from ._errors import BadToolCall as BadToolCall
from ._errors import LLMConfigError as LLMConfigError
from ._errors import LLMError as LLMError
from ._errors import MalformedToolArguments as MalformedToolArguments
from ._errors import NoModelConfigured as NoModelConfigured
from ._errors import NoProviderAvailable as NoProviderAvailable
from ._errors import ProviderTimeout as ProviderTimeout
from ._errors import ProviderUnavailable as ProviderUnavailable
from ._errors import RateLimited as RateLimited
from ._errors import RequestRejected as RequestRejected
from ._errors import UnknownModel as UnknownModel
from ._errors import UnknownTool as UnknownTool
from ._openai import OpenAIProvider as OpenAIProvider
from ._pricing import ModelPrices as ModelPrices
from ._pricing import PricedElsewhere as PricedElsewhere
from ._pricing import completion_cost as completion_cost
from ._pricing import model_prices as model_prices
from ._protocol import LLM as LLM
from ._protocol import RoutableLLM as RoutableLLM
from ._protocol import build_provider as build_provider
from ._provider import ErrorCounts as ErrorCounts
from ._provider import ProviderStats as ProviderStats
from ._router import ModelRouter as ModelRouter
from ._router import Rejection as Rejection
from ._router import RouteAttempt as RouteAttempt
from ._router import RouteDecision as RouteDecision
from ._router import estimate_prompt_tokens as estimate_prompt_tokens
from ._toolnames import ToolNameMap as ToolNameMap
from ._types import AssistantMessage as AssistantMessage
from ._types import Completion as Completion
from ._types import CompletionRequest as CompletionRequest
from ._types import FinishReason as FinishReason
from ._types import Message as Message
from ._types import StreamChunk as StreamChunk
from ._types import StreamEnd as StreamEnd
from ._types import SystemMessage as SystemMessage
from ._types import TextDelta as TextDelta
from ._types import ToolCall as ToolCall
from ._types import ToolCallReady as ToolCallReady
from ._types import ToolChoice as ToolChoice
from ._types import ToolMessage as ToolMessage
from ._types import Usage as Usage
from ._types import UserMessage as UserMessage

__all__ = [
    "CACHE_FILENAME",
    "LLM",
    "AnthropicProvider",
    "AssistantMessage",
    "BadResponse",
    "BadToolCall",
    "CacheLimits",
    "CacheStats",
    "CacheStoreError",
    "CachedLLM",
    "Completion",
    "CompletionRequest",
    "ErrorCounts",
    "FinishReason",
    "LLMConfig",
    "LLMConfigError",
    "LLMError",
    "MalformedToolArguments",
    "Message",
    "ModelPrices",
    "ModelRouter",
    "NoModelConfigured",
    "NoProviderAvailable",
    "OpenAIProvider",
    "PricedElsewhere",
    "ProviderConfig",
    "ProviderProfile",
    "ProviderStats",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RateLimited",
    "Rejection",
    "RequestRejected",
    "ResponseStore",
    "RoutableLLM",
    "RouteAttempt",
    "RouteDecision",
    "Secret",
    "StreamChunk",
    "StreamEnd",
    "SystemMessage",
    "TextDelta",
    "ToolCall",
    "ToolCallReady",
    "ToolChoice",
    "ToolMessage",
    "ToolNameMap",
    "ToolSpec",
    "UnknownModel",
    "UnknownTool",
    "Usage",
    "UserMessage",
    "build_provider",
    "cache_key",
    "calling_namespace",
    "completion_cost",
    "estimate_prompt_tokens",
    "llm_namespace",
    "load_llm_config",
    "model_prices",
]

_set_public_module(globals())
