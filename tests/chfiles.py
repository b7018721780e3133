"""Every byte clew leaves in a directory as a reader of the disk would see it, column files
decompressed: ClickHouse compresses columns (ZSTD, LZ4), so a scan of the raw bytes alone would not
find a secret stored in a compressed column. Used by the secret scans of the redaction tests."""

from __future__ import annotations

import struct
from pathlib import Path

import lz4.block
import zstandard

NONE, LZ4, ZSTD, MULTIPLE = 0x02, 0x82, 0x90, 0x91


def _block(buf: bytes) -> bytes | None:
    """One compressed block starting at its method byte: [method][compressed size][size][payload]."""
    if len(buf) < 9:
        return None
    method, compressed, size = buf[0], *struct.unpack_from("<II", buf, 1)
    payload = buf[9:compressed]
    if method == NONE:
        return payload
    if method == LZ4:
        return bytes(lz4.block.decompress(payload, uncompressed_size=size))
    if method == ZSTD:
        return bytes(zstandard.ZstdDecompressor().decompress(payload, max_output_size=size))
    if method == MULTIPLE:  # [count][methods...] then a nested block of the outermost codec
        count = payload[0]
        inner = _block(payload[1 + count :])
        # the next codec's block, or (for Delta and the like) encoded numbers: kept as they are
        return (_block(inner) or inner) if inner else None
    return None


def decompressed(data: bytes) -> bytes:
    """The contents of a ClickHouse compressed file (blocks of checksum + header + payload), or
    b"" when `data` is not one."""
    out, at = bytearray(), 0
    while at + 25 <= len(data):
        compressed = struct.unpack_from("<I", data, at + 17)[0]
        if compressed < 9 or at + 16 + compressed > len(data):
            return b""
        try:
            block = _block(data[at + 16 : at + 16 + compressed])
        except Exception:  # not a compressed file after all
            return b""
        if block is None:
            return b""
        out += block
        at += 16 + compressed
    return bytes(out)


def readable_bytes(directory: Path) -> bytes:
    """Every file's bytes, and for column files their decompressed contents too."""
    parts = []
    for path in directory.rglob("*"):
        if path.is_file():
            raw = path.read_bytes()
            parts.append(raw)
            if path.suffix == ".bin":
                parts.append(decompressed(raw))
    return b"".join(parts)
