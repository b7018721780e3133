"""Domain exceptions: what went wrong, in words a client can act on. The edges map each kind to an
HTTP status and a gRPC code in one place (`clew.gateway.errors`); nothing below the edges knows
either."""

from __future__ import annotations


class ClewError(Exception):
    """Base of every error clew answers a client with."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ClewError, ValueError):
    """The request cannot be understood as it is: a 400 / INVALID_ARGUMENT with the reason."""


class TooLarge(ClewError):
    """Over a named limit: 413 / RESOURCE_EXHAUSTED."""


class UnsupportedMedia(ClewError):
    """A content type or encoding clew does not take: 415 / INVALID_ARGUMENT."""


class Unauthorized(ClewError):
    """No API key, or one clew does not know: 401 / UNAUTHENTICATED."""


class Forbidden(ClewError):
    """A known key whose role or tenants do not cover the request: 403 / PERMISSION_DENIED."""


class RequestTimeout(ClewError):
    """A request body stopped arriving: 408 / DEADLINE_EXCEEDED."""


class NotFound(ClewError):
    """404 / NOT_FOUND."""


class Backpressure(ClewError):
    """The write queue is full: retry after `retry_after` seconds (503 + Retry-After / UNAVAILABLE)."""

    def __init__(self, retry_after: int = 1, message: str = "the write queue is full, retry later") -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TooManyRequests(ClewError):
    """A tenant over one of its limits (spans a second, queries at once): retry after
    `retry_after` seconds (429 + Retry-After / RESOURCE_EXHAUSTED with RetryInfo)."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QueryTooCostly(ClewError):
    """A query the engine stopped at the tenant's time budget: 422 with the budget named."""


class StoreError(ClewError, RuntimeError):
    """The storage failed or is closed; the request that met it may be retried (503 / UNAVAILABLE)."""


class ConfigError(ClewError, ValueError):
    """A setting of clew.toml, the environment or a flag is wrong: the server does not start."""
