"""The Python client of Ensemble's native API, sync (`EnsembleClient`) and asyncio
(`AsyncEnsembleClient`), with retries, a circuit breaker and per-call timeouts.

    from ensemble.client import EnsembleClient

    with EnsembleClient() as client:          # ENSEMBLE_URL / ENSEMBLE_API_KEY from the environment
        print(client.generate("mock-1", "Hello").content)
"""

from ensemble.client._base import DEFAULT_URL, MissingAPIKeyWarning
from ensemble.client.asyncio import AsyncBlockStream, AsyncEnsembleClient, AsyncTextStream
from ensemble.client.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    CircuitOpenError,
    ConfigurationError,
    EnsembleClientError,
    GatewayTimeoutError,
    InternalServerError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    ProviderError,
    RateLimitError,
    RequestTooLargeError,
    StreamError,
)
from ensemble.client.models import (
    BatchSubmission,
    ErrorBlock,
    EventBlock,
    Health,
    InferenceResponse,
    Model,
    RedactedThinkingBlock,
    RequestStatus,
    ServerToolBlock,
    TextBlock,
    ThinkingBlock,
    ToolCall,
    ToolCallBlock,
)
from ensemble.client.resilience import NO_RETRIES, CircuitBreaker, RetryPolicy, Timeouts
from ensemble.client.sync import BlockStream, EnsembleClient, TextStream

__all__ = [
    "DEFAULT_URL",
    "NO_RETRIES",
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncBlockStream",
    "AsyncEnsembleClient",
    "AsyncTextStream",
    "AuthenticationError",
    "BadRequestError",
    "BatchSubmission",
    "BlockStream",
    "CircuitBreaker",
    "CircuitOpenError",
    "ConfigurationError",
    "EnsembleClient",
    "EnsembleClientError",
    "ErrorBlock",
    "EventBlock",
    "GatewayTimeoutError",
    "Health",
    "InferenceResponse",
    "InternalServerError",
    "MissingAPIKeyWarning",
    "Model",
    "NotFoundError",
    "OverloadedError",
    "PermissionDeniedError",
    "ProviderError",
    "RateLimitError",
    "RedactedThinkingBlock",
    "RequestStatus",
    "RequestTooLargeError",
    "RetryPolicy",
    "ServerToolBlock",
    "StreamError",
    "TextBlock",
    "TextStream",
    "ThinkingBlock",
    "Timeouts",
    "ToolCall",
    "ToolCallBlock",
]
