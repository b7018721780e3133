"""Reading request bodies with a size limit that also holds after gzip decompression."""

from __future__ import annotations

import zlib

from starlette.requests import Request

from clew.core.errors import BadRequest, TooLarge, UnsupportedMedia


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_body(request: Request, limit: int) -> bytes:
    """The decoded body, or `TooLarge` past `limit` bytes (gzip bombs stop at the limit)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"request body of {declared} bytes is over the limit of {limit} bytes")
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity", "gzip", "x-gzip"):
        raise UnsupportedMedia(f"unsupported Content-Encoding {encoding!r}: use gzip or none")
    gzip = encoding in ("gzip", "x-gzip")
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzip else None
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        if inflate is not None:
            try:
                chunk = inflate.decompress(chunk, limit + 1 - size)
            except zlib.error as exc:
                raise BadRequest(f"invalid gzip body: {exc}") from exc
            # Output left unread because of the cap means the body is over the limit.
            if inflate.unconsumed_tail:
                raise TooLarge(f"decompressed body is over the limit of {limit} bytes")
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"request body is over the limit of {limit} bytes")
        parts.append(chunk)
    if inflate is not None:
        if not inflate.eof:
            raise BadRequest("invalid gzip body: truncated stream")
    return b"".join(parts)
