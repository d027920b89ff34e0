"""Access control's shared state on the SQLite metadata (issue 14; the tables are
drawn in sqlite_schema.py): the signing keys every worker uses and the failed-login
budget every worker spends. Plain functions of a connection, run in the store's
threads like every other query there. Times are the wall clock (as lease times):
the same for every process on this host."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

from oci_ref.storage.sqlite_cache import _in_tx


def signing_key(conn: sqlite3.Connection, name: str, candidate: bytes | None
                ) -> bytes | None:
    def run() -> bytes | None:
        if candidate is not None:
            # The first caller's candidate stays; every later one reads it.
            conn.execute('INSERT INTO signing_keys (name, key, created_at) '
                         'VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING',
                         [name, candidate, time.time()])
        row = conn.execute('SELECT key FROM signing_keys WHERE name = ?',
                           [name]).fetchone()
        return None if row is None else bytes(row[0])

    if candidate is None:
        return run()
    return _in_tx(conn, run)


def failed_logins(conn: sqlite3.Connection, client: str, window: float
                  ) -> tuple[int, float]:
    now = time.time()
    count, oldest = conn.execute(
        'SELECT count(*), min(at) FROM login_failures WHERE client = ? AND at > ?',
        [client, now - window]).fetchone()
    return int(count), (now - oldest if oldest is not None else 0.0)


def count_failed_login(conn: sqlite3.Connection, client: str, window: float) -> None:
    now = time.time()

    def run() -> None:
        # Forgetting the old ones here bounds the table by the failures of one
        # window, however many addresses an attacker sprays.
        conn.execute('DELETE FROM login_failures WHERE at <= ?', [now - window])
        conn.execute('INSERT INTO login_failures (client, at) VALUES (?, ?)',
                     [client, now])

    _in_tx(conn, run)


class AuthQueries:
    """Access control's MetadataStore methods, mixed into the SQLite store (which
    provides ``_read``/``_write``: its read and write threads)."""

    _read: Callable[..., Any]
    _write: Callable[..., Any]

    async def signing_key(self, name: str, candidate: bytes | None) -> bytes | None:
        call = self._read if candidate is None else self._write
        result: bytes | None = await call(signing_key, name, candidate)
        return result

    async def failed_logins(self, client: str, window: float) -> tuple[int, float]:
        result: tuple[int, float] = await self._read(failed_logins, client, window)
        return result

    async def count_failed_login(self, client: str, window: float) -> None:
        await self._write(count_failed_login, client, window)
