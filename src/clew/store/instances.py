"""Several clew instances on one ClickHouse store: leases, the one that runs the housekeeping, and the
time up to which every instance has committed what it received.

Each instance renews a lease row every few seconds with the database's clock and what its writer has
committed. The oldest live instance (earliest start, then name) is the leader: it alone runs the
components' periodic work (tail sampling, retention sweeps, counters), so a trace whose spans reached
different instances is decided once, and two sweeps never run at once. The leader reads new spans up
to the smallest `received_until` of the live instances: past it, another instance may still be
committing. Leadership moves only when the leader stops renewing (a stop gives its lease up at once;
a crash after `lease` seconds)."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from clew.store.connection import Connection
from clew.store.migrations import steps

INSTANCES_DDL = """
CREATE TABLE IF NOT EXISTS {db}.instances (
    instance String,
    started_at DateTime64(3, 'UTC'),
    renewed_at DateTime64(3, 'UTC'),
    received_until Int64,
    wrote_until Int64,
    stopped Bool,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY instance
TTL toDateTime(renewed_at) + INTERVAL 1 DAY
"""
MIGRATIONS = steps("instances", ("instance leases", [INSTANCES_DDL]))


@dataclass(frozen=True, slots=True)
class Peer:
    instance: str
    received_until: int
    wrote_until: int


class Instances:
    """This instance's lease, and the view of the others it had at its last renewal."""

    def __init__(
        self,
        conn: Connection,
        db: str,
        lease_s: int,
        received_until: Callable[[], int],
        wrote_until: Callable[[], int],
        name: str | None = None,
    ) -> None:
        self.conn, self.db, self.lease_s = conn, db, lease_s
        self._received_until, self._wrote_until = received_until, wrote_until
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._lock = threading.Lock()
        self._started: str | None = None
        self._leader: str | None = None
        self._peers: list[Peer] = []
        self._version = 0

    @property
    def renew_every(self) -> float:
        """Seconds between renewals: several within a lease, so one slow renewal loses nothing."""
        return max(0.5, self.lease_s / 5)

    def renew(self) -> None:
        """Write this instance's lease (the first call registers it), then read who is live."""
        until, wrote = self._received_until(), self._wrote_until()
        if self._started is None:
            table = self.conn.query("SELECT toString(now64(3, 'UTC'))")
            self._started = str(table.column(0)[0].as_py())
        self._write(until, wrote, stopped=False)
        table = self.conn.query(
            "SELECT instance, received_until, wrote_until FROM ("
            "SELECT instance, argMax(started_at, version) AS started, argMax(renewed_at, version) AS renewed, "
            "argMax(received_until, version) AS received_until, argMax(wrote_until, version) AS wrote_until, "
            f"argMax(stopped, version) AS gone FROM {self.db}.instances GROUP BY instance) "
            "WHERE NOT gone AND renewed > now64(3, 'UTC') - toIntervalMillisecond({lease:Int64}) "
            "ORDER BY started, instance",
            {"lease": self.lease_s * 1000},
        )
        names, received, wrote = (c.to_pylist() for c in table.columns)
        peers = [Peer(str(n), int(r), int(w)) for n, r, w in zip(names, received, wrote, strict=True)]
        with self._lock:
            self._peers = [p for p in peers if p.instance != self.name]
            self._leader = peers[0].instance if peers else None

    def leave(self) -> None:
        """Give the lease up (a clean stop): the next instance leads at its next renewal."""
        if self._started is not None:
            self._write(self._received_until(), self._wrote_until(), stopped=True)

    @property
    def leader(self) -> bool:
        with self._lock:
            return self._leader == self.name

    def received_until(self) -> int:
        """Every span received at or before this time (ns) by any live instance is committed."""
        with self._lock:
            return min([self._received_until(), *(p.received_until for p in self._peers)])

    def wrote_after(self, t: int, local: Callable[[int], bool]) -> bool:
        """Whether this or another live instance may have stored spans received after `t`."""
        with self._lock:
            return local(t) or any(p.wrote_until > t for p in self._peers)

    def _write(self, until: int, wrote: int, stopped: bool) -> None:
        self._version = max(time.time_ns(), self._version + 1)  # this instance's rows, in order
        self.conn.command(
            f"INSERT INTO {self.db}.instances SELECT {{name:String}}, toDateTime64({{started:String}}, 3, 'UTC'), "
            "now64(3, 'UTC'), {until:Int64}, {wrote:Int64}, {stopped:Bool}, {version:UInt64}",
            {
                "name": self.name,
                "started": self._started,
                "until": until,
                "wrote": wrote,
                "stopped": stopped,
                "version": self._version,
            },
        )
