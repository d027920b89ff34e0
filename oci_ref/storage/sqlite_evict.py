"""Eviction of the pull-through cache on the SQLite metadata (issue 13): when each
cached manifest was last served, how much one upstream's cache holds, and the
eviction itself as one write transaction. The choice of what goes is
oci_ref/upstream/evict.py's (:func:`~oci_ref.upstream.evict.choose`); here it is
applied, so a concurrent pull sees the manifest with its tags and blob links, or
none of it.

An upstream's cached content is everything under its prefix: the repositories
named ``<upstream name>/…`` (pushes there are refused, so nothing pushed lives
there). Scanned as a range of the primary keys: ``'<name>/' <= repo < '<name>0'``
('0' follows '/' in ASCII), so no LIKE escaping and the indexes serve it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from oci_ref.storage.interfaces import (
    CachedLink,
    CachedManifest,
    Choose,
    Evicted,
    cache_range,
)


def touch_cached(conn: sqlite3.Connection, repo: str, digest: str, now: float) -> None:
    conn.execute('INSERT INTO cache_used (repo, digest, used_at) VALUES (?, ?, ?) '
                 'ON CONFLICT (repo, digest) DO UPDATE SET '
                 'used_at = max(used_at, excluded.used_at)', [repo, digest, now])


def cache_usage(conn: sqlite3.Connection, prefix: str) -> int:
    """Bytes cached under ``prefix``: its manifests, and each blob linked there
    once (the blob store holds one copy per digest)."""
    lo, hi = cache_range(prefix)
    manifests = conn.execute('SELECT COALESCE(SUM(size), 0) FROM manifests '
                             'WHERE repo >= ? AND repo < ?', [lo, hi]).fetchone()[0]
    blobs = conn.execute(
        'SELECT COALESCE(SUM(size), 0) FROM blobs WHERE digest IN '
        '(SELECT digest FROM repo_blobs WHERE repo >= ? AND repo < ?)',
        [lo, hi]).fetchone()[0]
    return int(manifests) + int(blobs)


def _snapshot(conn: sqlite3.Connection, prefix: str
              ) -> tuple[list[CachedManifest], list[CachedLink]]:
    lo, hi = cache_range(prefix)
    children: dict[tuple[str, str], list[str]] = {}
    for repo, digest, child in conn.execute(
            'SELECT repo, digest, child FROM manifest_refs WHERE repo >= ? AND repo < ?',
            [lo, hi]):
        children.setdefault((repo, digest), []).append(child)
    manifests = [
        CachedManifest(repo, digest, int(size), float(used or 0),
                       tuple(children.get((repo, digest), ())))
        for repo, digest, size, used in conn.execute(
            'SELECT m.repo, m.digest, m.size, COALESCE(u.used_at, m.created_at) '
            'FROM manifests m LEFT JOIN cache_used u '
            'ON u.repo = m.repo AND u.digest = m.digest '
            'WHERE m.repo >= ? AND m.repo < ?', [lo, hi])]
    links = [CachedLink(repo, digest, int(size), float(at or 0))
             for repo, digest, size, at in conn.execute(
                 'SELECT l.repo, l.digest, b.size, l.created_at FROM repo_blobs l '
                 'JOIN blobs b ON b.digest = l.digest WHERE l.repo >= ? AND l.repo < ?',
                 [lo, hi])]
    return manifests, links


def evict_cached(conn: sqlite3.Connection, prefix: str, cap: int, choose: Choose
                 ) -> Evicted:
    """One transaction: choose what goes under ``prefix`` to come under ``cap``,
    remove those manifests (with their tags, cached tags and references) and blob
    links, then the blob rows nothing keeps: no link in any repository and no
    reference from any kept manifest, pushed or cached. The caller deletes the
    returned blobs' content after the commit, holding the GC lock."""
    conn.execute('BEGIN IMMEDIATE')
    try:
        manifests, links = _snapshot(conn, prefix)
        plan = choose(manifests, links, cap)
        for repo, digest in plan.manifests:
            conn.execute('DELETE FROM manifests WHERE repo = ? AND digest = ?',
                         [repo, digest])
            for table in ('tags', 'cache_tags', 'manifest_refs', 'cache_used'):
                conn.execute(f'DELETE FROM {table} WHERE repo = ? AND digest = ?',
                             [repo, digest])
        conn.executemany('DELETE FROM repo_blobs WHERE repo = ? AND digest = ?',
                         plan.links)
        blobs: list[tuple[str, int]] = []
        # Candidates: the blobs of the dropped links, and what the evicted
        # manifests referenced (a blob kept earlier only by their reference).
        children = {(m.repo, m.digest): m.children for m in manifests}
        candidates = [d for _, d in plan.links] + [
            c for key in plan.manifests for c in children.get(key, ())]
        for digest in dict.fromkeys(candidates):
            kept = conn.execute(
                'SELECT 1 FROM repo_blobs WHERE digest = ? UNION ALL '
                'SELECT 1 FROM manifest_refs WHERE child = ? LIMIT 1',
                [digest, digest]).fetchone()
            row = None if kept else conn.execute(
                'SELECT size FROM blobs WHERE digest = ?', [digest]).fetchone()
            if row is not None:
                conn.execute('DELETE FROM blobs WHERE digest = ?', [digest])
                blobs.append((digest, int(row[0])))
        lo, hi = cache_range(prefix)
        empty = [r[0] for r in conn.execute(
            'SELECT name FROM repositories r WHERE name >= ? AND name < ? AND '
            'NOT EXISTS (SELECT 1 FROM manifests m WHERE m.repo = r.name) AND '
            'NOT EXISTS (SELECT 1 FROM repo_blobs l WHERE l.repo = r.name) AND '
            'NOT EXISTS (SELECT 1 FROM tags t WHERE t.repo = r.name)', [lo, hi])]
        conn.executemany('DELETE FROM repositories WHERE name = ?', [(r,) for r in empty])
        conn.execute('COMMIT')
    except BaseException:
        if conn.in_transaction:
            conn.execute('ROLLBACK')
        raise
    return Evicted(plan.usage, plan.freed, list(plan.manifests), list(plan.links), blobs)


def cache_counts(conn: sqlite3.Connection, prefixes: list[str]) -> dict[str, int]:
    """How many manifests, blob links and blobs are cached (under any of
    ``prefixes``) and how many are pushed (the rest); a blob both cached and
    pushed counts as pushed (eviction leaves it)."""
    if not prefixes:
        cond = '0'
        params: list[Any] = []
    else:
        cond = ' OR '.join(['(repo >= ? AND repo < ?)'] * len(prefixes))
        params = [b for p in prefixes for b in cache_range(p)]

    def one(sql: str) -> int:
        return int(conn.execute(sql, params).fetchone()[0])

    cached_manifests = one(f'SELECT COUNT(*) FROM manifests WHERE {cond}')
    cached_links = one(f'SELECT COUNT(*) FROM repo_blobs WHERE {cond}')
    pushed_blobs = one(f'SELECT COUNT(DISTINCT digest) FROM repo_blobs WHERE NOT ({cond})')
    cached_blobs = int(conn.execute(
        f'SELECT COUNT(DISTINCT digest) FROM repo_blobs WHERE ({cond}) AND digest NOT IN '
        f'(SELECT digest FROM repo_blobs WHERE NOT ({cond}))', params + params
    ).fetchone()[0])
    return {
        'cached_manifests': cached_manifests,
        'pushed_manifests': int(conn.execute(
            'SELECT COUNT(*) FROM manifests').fetchone()[0]) - cached_manifests,
        'cached_blob_links': cached_links,
        'cached_blobs': cached_blobs,
        'pushed_blobs': pushed_blobs,
    }


def cache_uses(conn: sqlite3.Connection) -> list[tuple[str, str, float]]:
    return [(r, d, float(at)) for r, d, at in conn.execute(
        'SELECT repo, digest, used_at FROM cache_used ORDER BY repo, digest')]


class EvictQueries:
    """The eviction's MetadataStore methods, mixed into the SQLite store."""

    _read: Callable[..., Any]
    _write: Callable[..., Any]

    async def touch_cached(self, repo: str, digest: str, now: float) -> None:
        await self._write(touch_cached, repo, digest, now)

    async def cache_usage(self, prefix: str) -> int:
        result: int = await self._read(cache_usage, prefix)
        return result

    async def evict_cached(self, prefix: str, cap: int, choose: Choose) -> Evicted:
        result: Evicted = await self._write(evict_cached, prefix, cap, choose)
        return result

    async def cache_counts(self, prefixes: list[str]) -> dict[str, int]:
        result: dict[str, int] = await self._read(cache_counts, prefixes)
        return result

    async def cache_uses(self) -> list[tuple[str, str, float]]:
        result: list[tuple[str, str, float]] = await self._read(cache_uses)
        return result
