"""API keys: those of `clew.toml` (`[[keys]]`, with the key's SHA-256) and those `clew keys create`
made, in `keys.json` of the data directory (hashes only: a leaked file gives no key). The server
re-reads the file when it changes, so a key created or revoked while it runs takes effect at once."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from clew.core.errors import ConfigError
from clew.core.identity import ROLES, ApiKey, Role, check_tenant

log = logging.getLogger(__name__)

PREFIX = "clew_"
KEYS_FILE = "keys.json"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def api_key(raw: Mapping[str, Any], source: str) -> ApiKey:
    """A key from its description (a `[[keys]]` table, an entry of keys.json), checked."""
    unknown = sorted(set(raw) - {"sha256", "role", "tenant", "tenants", "name", "id"})
    if unknown:
        raise ConfigError(f"{source}: unknown key setting {unknown[0]!r}")
    role = raw.get("role")
    if role not in ROLES:
        raise ConfigError(f"{source}: role must be one of {', '.join(ROLES)}, got {role!r}")
    sha = str(raw.get("sha256", "")).lower()
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ConfigError(f"{source}: sha256 must be the 64 hex digits `clew keys hash` prints")
    tenants = raw.get("tenants", [raw["tenant"]] if "tenant" in raw else [])
    if not isinstance(tenants, list) or not all(isinstance(t, str) for t in tenants):
        raise ConfigError(f"{source}: tenants must be a list of names")
    try:
        checked = tuple(check_tenant(t) for t in tenants)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    if role == "ingest" and len(checked) != 1:
        raise ConfigError(f"{source}: an ingest key writes to exactly one tenant")
    if role == "read" and not checked:
        raise ConfigError(f"{source}: a read key names the tenants it may read")
    return ApiKey(sha[:12], sha, role, checked, str(raw.get("name", "")))


class FileKeyRing:
    """The keys of the config plus those of `keys.json` (re-read when its modification time changes)."""

    def __init__(self, configured: Iterable[ApiKey] = (), path: Path | None = None) -> None:
        self.configured = tuple(configured)
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._stored: tuple[ApiKey, ...] = ()
        self._reload()

    @property
    def keys(self) -> tuple[ApiKey, ...]:
        self._reload()
        return (*self.configured, *self._stored)

    @property
    def active(self) -> bool:
        return bool(self.keys)

    def find(self, secret: str) -> ApiKey | None:
        wanted = digest(secret)
        found = None
        for key in self.keys:  # every key compared in constant time, whichever matches
            if hmac.compare_digest(key.sha256, wanted):
                found = key
        return found

    def create(self, role: Role, tenants: Iterable[str], name: str = "") -> tuple[str, ApiKey]:
        """A new key, stored hashed; the key itself is returned once and kept nowhere."""
        if self.path is None:
            raise ConfigError("no keys file to store a key in")
        secret = PREFIX + secrets.token_urlsafe(32)
        sha = digest(secret)
        key = api_key({"sha256": sha, "role": role, "tenants": list(tenants), "name": name}, "new key")
        with self._lock:
            self._write([*self._read(), key])
        return secret, key

    def revoke(self, key_id: str) -> bool:
        if self.path is None:
            return False
        with self._lock:
            stored = self._read()
            kept = [k for k in stored if k.id != key_id]
            if len(kept) == len(stored):
                return False
            self._write(kept)
        return True

    def _read(self) -> list[ApiKey]:
        if self.path is None or not self.path.exists():
            return []
        try:
            doc = json.loads(self.path.read_text())
            return [api_key(entry, str(self.path)) for entry in doc.get("keys", [])]
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            raise ConfigError(f"cannot read API keys from {self.path}: {exc}") from exc

    def _write(self, keys: list[ApiKey]) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "keys": [
                {"sha256": k.sha256, "role": k.role, "tenants": list(k.tenants), "name": k.name} for k in keys
            ]
        }
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=2)
        os.replace(tmp, self.path)
        self._stamp = None

    def _reload(self) -> None:
        if self.path is None:
            return
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = (0, 0)
        if stamp == self._stamp:
            return
        with self._lock:
            try:
                self._stored = tuple(self._read())
            except ConfigError:
                if self._stamp is None:  # at start: the server does not start on a broken file
                    raise
                log.error("API keys: %s unreadable, the keys read before stay in force", self.path)
            self._stamp = stamp
