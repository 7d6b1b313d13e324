"""One exception hierarchy for everything a request can fail with.

    EnsembleError                      (internal, 500)
    ├── ClientError                    4xx: the caller can fix it
    │   ├── InvalidRequest             400 invalid_request
    │   ├── AuthenticationFailed       401 authentication
    │   ├── PermissionDenied           403 permission
    │   ├── NotFound                   404 not_found
    │   ├── MethodNotAllowed           405 invalid_request
    │   ├── RequestTooLarge            413 request_too_large
    │   └── RateLimited                429 rate_limited (carries retry_after)
    ├── ProviderError                  502 provider_error (the upstream failed or misbehaved)
    │   └── UpstreamTimeout            504 timeout
    ├── Overloaded                     503 overloaded
    └── ConfigError                    not an HTTP error: bad configuration at start-up

Lower-layer exceptions (aiohttp, sqlite, msgspec) are mapped to these at the module boundary that
sees them; nothing else ever reaches the error renderer.
"""

from __future__ import annotations

from ensemble.logs import redact


class EnsembleError(Exception):
    status = 500
    type = "internal"
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        # Messages reach clients and logs; an upstream's may echo a credential ("Incorrect API key
        # provided: sk-…"), so secrets are masked here, once, for every error.
        message = redact(message)
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param
        # Response headers that belong with this error (e.g. the caller's x-ratelimit-* values).
        self.headers: list[tuple[str, str]] = []


class ClientError(EnsembleError):
    status = 400
    type = "invalid_request"
    code = "invalid_request"


class InvalidRequest(ClientError):
    pass


class AuthenticationFailed(ClientError):
    status = 401
    type = "authentication"
    code = "invalid_api_key"


class PermissionDenied(ClientError):
    status = 403
    type = "permission"
    code = "model_not_allowed"


class NotFound(ClientError):
    status = 404
    type = "not_found"
    code = "not_found"


class MethodNotAllowed(ClientError):
    status = 405
    type = "invalid_request"
    code = "method_not_allowed"

    def __init__(self, message: str, allowed: tuple[str, ...]) -> None:
        super().__init__(message)
        self.allowed = allowed


class RequestTimeout(ClientError):
    """The body did not arrive within `server.read_timeout` (the error type stays invalid_request)."""

    status = 408
    code = "request_timeout"


class RequestTooLarge(ClientError):
    status = 413
    type = "request_too_large"
    code = "request_too_large"


class RateLimited(ClientError):
    status = 429
    type = "rate_limited"
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class ProviderError(EnsembleError):
    """The upstream answered with an error, broke the connection, or sent something unparseable."""

    status = 502
    type = "provider_error"
    code = "provider_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        upstream_status: int | None = None,
        retryable: bool = False,
        retry_after_s: float | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        # The canonical type the provider's own error means (error_types.from_provider), when the
        # provider said: an overload stays an overload in every client format.
        self.kind = kind
        self.upstream_status = upstream_status
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.body = body
        self.upstream_headers = headers or {}


class UpstreamTimeout(ProviderError):
    status = 504
    type = "timeout"
    code = "upstream_timeout"


class Overloaded(EnsembleError):
    status = 503
    type = "overloaded"
    code = "overloaded"

    def __init__(self, message: str, *, code: str | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class ConfigError(Exception):
    """Configuration problems, each already formatted as `file: key.path: what is wrong`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
