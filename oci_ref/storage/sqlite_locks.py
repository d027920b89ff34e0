"""SQLite leases (the ``locks`` table): taking, dropping and telling a live holder
from a dead one. Each function runs inside the caller's write transaction;
sqlite.py's SQLiteMetadataStore holds, renews and releases leases with them.

A holder is named by its PID and its start time (``<proc>-<hex>@<start>``): a PID
reused by another process (pid_max wraps on a busy machine) or a zombie left by a
killed worker holds nothing, so a restarted server resumes at once instead of
waiting for the lease to run out.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Sequence

from oci_ref.storage.interfaces import Lease

LEASE_SECONDS = 30.0


def process_stat(pid: int) -> tuple[str, str]:
    """The process's state and start time (Linux /proc, fields 3 and 22),
    ('', '') where unknown."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            fields = f.read().rsplit(')', 1)[1].split()
        return fields[0], fields[19]
    except (OSError, IndexError):
        return '', ''


_STARTS: dict[int, str] = {}


def my_start() -> str:
    pid = os.getpid()  # per process: workers fork after import
    if pid not in _STARTS:
        _STARTS[pid] = process_stat(pid)[1]
    return _STARTS[pid]


def alive(pid: int, owner: str) -> bool:
    """Whether the lease's holder still runs: its PID exists, is not a zombie (a
    killed worker whose parent died too waits for a reaper that may never come,
    e.g. in a container whose PID 1 does not reap), and, where the start time is
    known, is the same process (not a later one given the same PID)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    state, start = process_stat(pid)
    if state in ('Z', 'X', 'x'):
        return False
    _, at, started = owner.rpartition('@')
    return not at or start in ('', started)


def take(conn: sqlite3.Connection, name: str, owner: str, exclusive: bool) -> bool:
    """Inside a write transaction: take ``name`` unless a live holder conflicts."""
    now = time.time()
    live_exclusive = live = False
    for other, other_exclusive, pid, expires_at in list(conn.execute(
            'SELECT owner, exclusive, pid, expires_at FROM locks WHERE name = ?', [name])):
        if expires_at < now or not alive(pid, other):
            drop(conn, name, other)  # its holder is gone
            continue
        live = True
        live_exclusive = live_exclusive or bool(other_exclusive)
    if live_exclusive or (exclusive and live):
        return False
    conn.execute('INSERT INTO locks (name, owner, exclusive, pid, expires_at) '
                 'VALUES (?, ?, ?, ?, ?)',
                 [name, owner, int(exclusive), os.getpid(), now + LEASE_SECONDS])
    return True


def drop(conn: sqlite3.Connection, name: str, owner: str) -> None:
    conn.execute('DELETE FROM locks WHERE name = ? AND owner = ?', [name, owner])


def release_in(conn: sqlite3.Connection, leases: Sequence[Lease]) -> None:
    """Drop ``leases`` inside the caller's transaction (what they guarded is done)."""
    for lease in leases:
        drop(conn, lease.name, lease.owner)


def mark_released(leases: Sequence[Lease]) -> None:
    for lease in leases:
        lease.released = True


__all__ = ['LEASE_SECONDS', 'alive', 'drop', 'mark_released', 'my_start',
           'process_stat', 'release_in', 'take']
