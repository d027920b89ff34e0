"""Recent read results, served without a thread hop while the database is unchanged
(issue 17: the manifest path, tags lists).

SQLite in WAL mode publishes every commit by rewriting the wal-index header at the
start of the ``-shm`` file that every connection to the database maps
(https://www.sqlite.org/walformat.html, "The WAL-Index Format"): a commit appends
frames and raises ``mxFrame``, a WAL restart changes the salts, and ``iChange``
counts transactions. A reader's snapshot is the state that header describes. The
header is kept twice; writers write the second copy, then the first; a reader that
reads the first, then the second, and finds them equal has a consistent header.

A result is kept with the header read before its query when the header reads the
same after it: no commit happened in between, so the query saw that header's state.
It is served while the header still reads the same, i.e. while no connection of any
process (workers, other servers on the same file, the CLI, even the sqlite3 shell)
has committed anything since. Reading the header is a read of shared memory (a
page every connection keeps in use): no system call, no lock, nothing to wait for,
so the check runs on the event loop; a query still runs in a store thread
(oci_ref/storage/threads.py).

The ``-shm`` file is deleted when the last connection to the database closes; the
store's first connection (its migration's) stays open for as long as the file is
mapped, so it stays the file every connection uses. Anything unexpected (no
``-shm``: not WAL, another VFS) turns the cache off: every read then goes to a
thread as before.
"""

from __future__ import annotations

import logging
import mmap
import os
import sqlite3
import threading
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger('oci_ref')
T = TypeVar('T')

# One copy of the wal-index header (WalIndexHdr): 48 bytes; isInit at offset 12.
_HEADER = 48
_IS_INIT = 12
# Bounds of what is kept per process: results are small (a manifest, a page of
# tags); larger ones are never kept, and a full cache starts afresh.
ENTRIES_MAX = 1024
BYTES_MAX = 16 * 1024 * 1024
ENTRY_BYTES_MAX = 1024 * 1024

MISS: Any = object()


class Recent:
    """Results keyed by the caller, each with the database version it was read at."""

    def __init__(self, header: mmap.mmap | None, fd: int):
        self._map = header
        self._fd = fd
        self._entries: dict[Hashable, tuple[bytes, Any, int]] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0  # served without a query (tests, and the profile's story)

    @classmethod
    def open(cls, path: Path, anchor: sqlite3.Connection) -> Recent | None:
        """Map ``path``'s wal-index header, or None when it cannot be used.
        ``anchor``: a connection to it that the caller keeps open for as long as
        this is used (and closes)."""
        try:
            # A read initialises the wal-index (the -shm file) if nobody has yet.
            anchor.execute('SELECT count(*) FROM sqlite_master').fetchone()
            if anchor.execute('PRAGMA journal_mode').fetchone()[0].lower() != 'wal':
                raise OSError('not in WAL mode')
            fd = os.open(f'{path}-shm', os.O_RDONLY)
        except (OSError, sqlite3.Error) as ex:
            log.info('read cache off for %s: %s', path, ex)
            return None
        try:
            header = mmap.mmap(fd, 2 * _HEADER, mmap.MAP_SHARED, mmap.PROT_READ)
        except (OSError, ValueError) as ex:
            log.info('read cache off for %s: %s', path, ex)
            # Kept all the same: see close().
            return cls(None, fd)
        return cls(header, fd)

    @property
    def usable(self) -> bool:
        return self._map is not None

    def close(self) -> None:
        """Only after every connection of this process to the database is closed:
        closing a descriptor of the -shm file releases every POSIX lock this
        process holds on it, SQLite's included (fcntl(2)). Released while SQLite
        still uses the file, another process would take itself for the first one
        and reset the file under this one's connections (and mapping)."""
        self._entries.clear()
        if self._map is not None:
            self._map.close()
            self._map = None
        os.close(self._fd)

    def version(self) -> bytes | None:
        """The wal-index header now, or None while it is being written."""
        header = self._map
        if header is None:
            return None
        first = header[0:_HEADER]
        if first != header[_HEADER:2 * _HEADER] or not first[_IS_INIT]:
            return None
        return first

    def get(self, key: Hashable) -> Any:
        """The result kept for ``key`` if the database is unchanged since, else MISS.
        Event loop side: a dict lookup and a 96-byte read of shared memory."""
        entry = self._entries.get(key)
        if entry is None:
            return MISS
        if entry[0] != self.version():
            return MISS
        self.hits += 1
        return entry[1]

    def through(self, conn: sqlite3.Connection, key: Hashable, size: Callable[[Any], int],
                fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` (in a store thread), kept under ``key`` when no commit
        happened while it ran; ``size`` estimates what keeping it costs in bytes."""
        before = self.version()
        result = fn(conn, *args)
        # Nothing is kept for what does not exist: names clients make up would
        # only push out what they pull.
        if result is None or before is None or self.version() != before:
            return result
        cost = size(result)
        if cost > ENTRY_BYTES_MAX:
            return result
        with self._lock:
            if len(self._entries) >= ENTRIES_MAX or self._bytes + cost > BYTES_MAX:
                self._entries.clear()
                self._bytes = 0
            old = self._entries.get(key)
            if old is not None:
                self._bytes -= old[2]
            self._entries[key] = (before, result, cost)
            self._bytes += cost
        return result


__all__ = ['MISS', 'Recent']
