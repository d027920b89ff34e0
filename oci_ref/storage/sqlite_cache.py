"""The pull-through cache's queries on the SQLite metadata (issue 13; the table is
drawn in sqlite_schema.py). Plain functions of a connection, run in the store's
threads like every other query there."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from oci_ref.storage.interfaces import CacheTag, FetchClaim, ManifestRecord
from oci_ref.storage.sqlite_locks import alive

T = TypeVar('T')


def cache_tag(conn: sqlite3.Connection, repo: str, tag: str) -> CacheTag | None:
    # With its manifest, in the same read: a hit needs nothing else (issue 13).
    row = conn.execute('SELECT c.digest, c.validated_at, m.media_type, m.size, m.content '
                       'FROM cache_tags c LEFT JOIN manifests m '
                       'ON m.repo = c.repo AND m.digest = c.digest '
                       'WHERE c.repo = ? AND c.tag = ?', [repo, tag]).fetchone()
    if row is None:
        return None
    digest, validated_at, media_type, size, content = row
    record = (None if content is None
              else ManifestRecord(digest, media_type, size, content))
    return CacheTag(digest, float(validated_at), record)


def _cache_tag_size(tag: CacheTag) -> int:
    return 200 + (tag.record.size if tag.record is not None else 0)


def cache_tags_validated(conn: sqlite3.Connection, repo: str, tags: list[str]
                         ) -> dict[str, float]:
    found: dict[str, float] = {}
    for i in range(0, len(tags), 500):  # SQLite caps bound parameters
        part = tags[i:i + 500]
        found.update((t, float(v)) for t, v in conn.execute(
            f'SELECT tag, validated_at FROM cache_tags WHERE repo = ? AND tag IN '
            f'({",".join("?" * len(part))})', [repo, *part]))
    return found


def _in_tx(conn: sqlite3.Connection, fn: Callable[[], T]) -> T:
    conn.execute('BEGIN IMMEDIATE')
    try:
        result = fn()
        conn.execute('COMMIT')
        return result
    except BaseException:
        if conn.in_transaction:
            conn.execute('ROLLBACK')
        raise


def set_cache_tag(conn: sqlite3.Connection, repo: str, tag: str, digest: str,
                  validated_at: float) -> None:
    _in_tx(conn, lambda: conn.execute(
        'INSERT OR REPLACE INTO cache_tags (repo, tag, digest, validated_at)'
        ' VALUES (?, ?, ?, ?)', [repo, tag, digest, validated_at]))


_FETCH = 'SELECT owner, spool, size, written, heartbeat FROM cache_fetches WHERE key = ?'


def _owner_alive(owner: str) -> bool:
    """Whether a claim's owner (``<pid>-…``, oci_ref/upstream/fetches.py) still runs.
    One host shares a SQLite store, so a dead PID is a dead owner: its claim is
    stale at once, not after CLAIM_STALE (a restart after a crash re-fetches at once
    instead of tailing a spool nobody writes)."""
    pid = owner.split('-', 1)[0]
    return not pid.isdigit() or alive(int(pid), owner)


def _claim(row: Any) -> FetchClaim:
    """The claim; a dead owner's reads with heartbeat 0 (stale for every reader)."""
    heartbeat = float(row[4]) if _owner_alive(row[0]) else 0.0
    return FetchClaim(row[0], row[1], row[2], int(row[3]), heartbeat)


def claim_fetch(conn: sqlite3.Connection, key: str, owner: str, spool: str, now: float,
                stale_before: float) -> FetchClaim:
    def run() -> FetchClaim:
        row = conn.execute(_FETCH, [key]).fetchone()
        if row is not None and (claim := _claim(row)).heartbeat >= stale_before:
            return claim
        conn.execute('INSERT OR REPLACE INTO cache_fetches (key, owner, spool, size, '
                     'written, heartbeat) VALUES (?, ?, ?, NULL, 0, ?)',
                     [key, owner, spool, now])
        return FetchClaim(owner, spool, None, 0, now)

    return _in_tx(conn, run)


def get_fetch(conn: sqlite3.Connection, key: str) -> FetchClaim | None:
    row = conn.execute(_FETCH, [key]).fetchone()
    return None if row is None else _claim(row)


def update_fetch(conn: sqlite3.Connection, key: str, owner: str, written: int,
                 size: int | None, now: float) -> bool:
    return _in_tx(conn, lambda: conn.execute(
        'UPDATE cache_fetches SET written = ?, size = ?, heartbeat = ? '
        'WHERE key = ? AND owner = ?', [written, size, now, key, owner]).rowcount == 1)


def end_fetch(conn: sqlite3.Connection, key: str, owner: str) -> None:
    _in_tx(conn, lambda: conn.execute(
        'DELETE FROM cache_fetches WHERE key = ? AND owner = ?', [key, owner]))


class CacheQueries:
    """The pull-through cache's MetadataStore methods, mixed into the SQLite store
    (which provides ``_read``/``_write``: its read and write threads)."""

    _read: Callable[..., Any]
    _recent_read: Callable[..., Any]
    _write: Callable[..., Any]

    async def cache_tag(self, repo: str, tag: str) -> CacheTag | None:
        # A hit of the pull-through cache: served without a thread hop while the
        # database is unchanged (sqlite_recent.py).
        result: CacheTag | None = await self._recent_read(
            ('cache_tag', repo, tag), _cache_tag_size, cache_tag, repo, tag)
        return result

    async def set_cache_tag(self, repo: str, tag: str, digest: str,
                            validated_at: float) -> None:
        await self._write(set_cache_tag, repo, tag, digest, validated_at)

    async def cache_tags_validated(self, repo: str, tags: list[str]
                                   ) -> dict[str, float]:
        result: dict[str, float] = await self._read(cache_tags_validated, repo, tags)
        return result

    async def claim_fetch(self, key: str, owner: str, spool: str, now: float,
                          stale_before: float) -> FetchClaim:
        result: FetchClaim = await self._write(claim_fetch, key, owner, spool, now,
                                               stale_before)
        return result

    async def get_fetch(self, key: str) -> FetchClaim | None:
        result: FetchClaim | None = await self._read(get_fetch, key)
        return result

    async def update_fetch(self, key: str, owner: str, written: int, size: int | None,
                           now: float) -> bool:
        result: bool = await self._write(update_fetch, key, owner, written, size, now)
        return result

    async def end_fetch(self, key: str, owner: str) -> None:
        await self._write(end_fetch, key, owner)
