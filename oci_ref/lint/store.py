"""Where the linter keeps what it saw, shared by every worker: one small interface
(:class:`LintStore`) and its SQLite implementation under the storage root.

The store is blocking; the ASGI recorder calls it from one thread of its own
(:class:`oci_ref.lint.recorder.LintRecorder`), never on the event loop. Everything
in it is bounded: one example per client and rule, at most ``MAX_CLIENTS`` clients
and as many client and rule rows (later ones are counted under one "other clients"
row), and handed-out Locations and Links are dropped after ``KEEP_SECONDS``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from oci_ref.lint.rules import State

MAX_CLIENTS = 2000
KEEP_SECONDS = 86400.0
OTHER = ('(other clients)', '')


class LintStore(State, Protocol):
    """What the recorder needs; the metadata store can implement it later."""

    def note_location(self, session: str, token: str, now: float) -> None: ...

    def note_link(self, path: str, query: str, now: float) -> None: ...

    def note_retry_after(self, client: str, key: str, not_before: float) -> None: ...

    def note_request(self, user_agent: str, address: str, now: float) -> None: ...

    def record(self, user_agent: str, address: str, rule: str, example: dict[str, Any],
               now: float) -> None: ...

    def findings(self) -> list[dict[str, Any]]: ...

    def clients(self) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS findings (
    user_agent TEXT NOT NULL, address TEXT NOT NULL, rule TEXT NOT NULL,
    count INTEGER NOT NULL, example TEXT NOT NULL, first_seen REAL NOT NULL,
    last_seen REAL NOT NULL, PRIMARY KEY (user_agent, address, rule));
CREATE TABLE IF NOT EXISTS clients (
    user_agent TEXT NOT NULL, address TEXT NOT NULL, requests INTEGER NOT NULL,
    first_seen REAL NOT NULL, last_seen REAL NOT NULL,
    PRIMARY KEY (user_agent, address));
CREATE TABLE IF NOT EXISTS locations (
    session TEXT NOT NULL, token TEXT NOT NULL, issued REAL NOT NULL,
    seq INTEGER PRIMARY KEY AUTOINCREMENT);
CREATE INDEX IF NOT EXISTS locations_session ON locations (session);
CREATE TABLE IF NOT EXISTS links (
    path TEXT NOT NULL, query TEXT NOT NULL, issued REAL NOT NULL,
    PRIMARY KEY (path, query));
CREATE TABLE IF NOT EXISTS retry_after (
    client TEXT NOT NULL, key TEXT NOT NULL, not_before REAL NOT NULL,
    PRIMARY KEY (client, key));
"""


class SQLiteLintStore:
    """``<root>/.lint/lint.db``: WAL, so each worker writes while others read."""

    def __init__(self, root: Path):
        self.path = Path(root) / '.lint' / 'lint.db'
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
        self._lock = threading.Lock()  # one connection, used by one thread at a time
        with self._lock:
            self._db.execute('PRAGMA journal_mode=WAL')
            self._db.execute('PRAGMA synchronous=NORMAL')
            self._db.executescript(_SCHEMA)
        self._writes = 0

    def _run(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    # -- handed out ---------------------------------------------------------------

    def note_location(self, session: str, token: str, now: float) -> None:
        self._run('INSERT INTO locations (session, token, issued) VALUES (?, ?, ?)',
                  (session, token, now))
        self._prune(now)

    def note_link(self, path: str, query: str, now: float) -> None:
        self._run('INSERT OR REPLACE INTO links VALUES (?, ?, ?)', (path, query, now))
        self._prune(now)

    def note_retry_after(self, client: str, key: str, not_before: float) -> None:
        self._run('INSERT OR REPLACE INTO retry_after VALUES (?, ?, ?)',
                  (client, key, not_before))
        self._prune(time.time())

    def _prune(self, now: float) -> None:
        self._writes += 1
        if self._writes % 500:
            return
        old = now - KEEP_SECONDS
        with self._lock:
            self._db.execute('DELETE FROM locations WHERE issued < ?', (old,))
            self._db.execute('DELETE FROM links WHERE issued < ?', (old,))
            self._db.execute('DELETE FROM retry_after WHERE not_before < ?', (now,))

    def upload_tokens(self, session: str) -> list[str]:
        return [r[0] for r in self._run(
            'SELECT token FROM locations WHERE session = ? ORDER BY seq', (session,))]

    def link_issued(self, path: str, query: str) -> bool:
        return bool(self._run('SELECT 1 FROM links WHERE path = ? AND query = ?',
                              (path, query)))

    def retry_not_before(self, client: str, key: str) -> float | None:
        rows = self._run('SELECT not_before FROM retry_after WHERE client = ? AND key = ?',
                         (client, key))
        return rows[0][0] if rows else None

    # -- findings -----------------------------------------------------------------

    def note_request(self, user_agent: str, address: str, now: float) -> None:
        with self._lock:
            db = self._db
            db.execute('BEGIN IMMEDIATE')
            try:
                key = (user_agent, address)
                if db.execute('SELECT 1 FROM clients WHERE user_agent = ? AND '
                              'address = ?', key).fetchone() is None and db.execute(
                        'SELECT COUNT(*) FROM clients').fetchone()[0] >= MAX_CLIENTS:
                    key = OTHER
                db.execute('INSERT INTO clients VALUES (?, ?, 1, ?, ?) '
                           'ON CONFLICT (user_agent, address) DO UPDATE SET '
                           'requests = requests + 1, last_seen = excluded.last_seen',
                           (*key, now, now))
                db.execute('COMMIT')
            except BaseException:
                db.execute('ROLLBACK')
                raise

    def clients(self) -> list[dict[str, Any]]:
        return [{'user_agent': ua, 'address': addr, 'requests': n, 'first_seen': first,
                 'last_seen': last} for ua, addr, n, first, last in self._run(
                     'SELECT user_agent, address, requests, first_seen, last_seen '
                     'FROM clients ORDER BY user_agent, address')]

    def record(self, user_agent: str, address: str, rule: str, example: dict[str, Any],
               now: float) -> None:
        with self._lock:
            db = self._db
            db.execute('BEGIN IMMEDIATE')
            try:
                key = (user_agent, address, rule)
                found = db.execute('SELECT 1 FROM findings WHERE user_agent = ? AND '
                                   'address = ? AND rule = ?', key).fetchone()
                if found is None and db.execute(
                        'SELECT COUNT(*) FROM findings').fetchone()[0] >= MAX_CLIENTS:
                    key = (*OTHER, rule)
                # The first example stays: one per client and rule.
                db.execute(
                    'INSERT INTO findings VALUES (?, ?, ?, 1, ?, ?, ?) '
                    'ON CONFLICT (user_agent, address, rule) DO UPDATE SET '
                    'count = count + 1, last_seen = excluded.last_seen',
                    (*key, json.dumps(example), now, now))
                db.execute('COMMIT')
            except BaseException:
                db.execute('ROLLBACK')
                raise

    def findings(self) -> list[dict[str, Any]]:
        rows = self._run('SELECT user_agent, address, rule, count, example, first_seen, '
                         'last_seen FROM findings ORDER BY user_agent, address, rule')
        return [{'user_agent': ua, 'address': addr, 'rule': rule, 'count': count,
                 'example': json.loads(example), 'first_seen': first,
                 'last_seen': last}
                for ua, addr, rule, count, example, first, last in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
