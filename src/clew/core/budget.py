"""The time a query may take, set per request by the edge (the tenant's `query_timeout_s`) and read
by the store, which has the engine stop the query there. A context variable, so that it follows a
request into the thread that runs its query and never leaks to another request's."""

from __future__ import annotations

from contextvars import ContextVar

QUERY_SECONDS: ContextVar[float | None] = ContextVar("clew_query_seconds", default=None)
