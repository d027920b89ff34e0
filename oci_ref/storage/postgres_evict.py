"""Eviction of the pull-through cache on the PostgreSQL metadata (issue 13): the
same answers as sqlite_evict.py, for a cache every replica shares. The choice of
what goes is oci_ref/upstream/evict.py's (:func:`~oci_ref.upstream.evict.choose`);
here it is applied in one transaction, so a pull on any replica sees a manifest
with its tags and blob links, or none of it.

Safe against the other replicas as GC's sweep is (postgres.py):

- The evictor holds the GC lease exclusively (a ``locks`` row every replica
  honours), which every blob commit, mount and fetch takes shared: no blob gets
  linked anywhere while the blob rows nothing keeps are found and deleted, and the
  content is deleted after the commit under that lease.
- The transaction locks the content tables against writers (``LOCK TABLE ... IN
  EXCLUSIVE MODE``; readers go on): what it read to choose (the manifests, their
  references, the links) stays so until it commits, as SQLite's write lock keeps
  it. A manifest stored meanwhile on another replica waits and lands after, whole.
- That lock is taken only when there is something to remove: the choice is made
  once without it, and when it removes nothing (the cache is over its cap only
  by content younger than ``cache_min_age``), nothing is locked. Else it is made
  again under the lock, on what is there then.

An upstream's cached content is the key range ``'<name>/' <= repo < '<name>0'``,
as in sqlite_evict.py (the columns sort bytewise, COLLATE "C").
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from oci_ref.storage.interfaces import CachedLink, CachedManifest, Evicted, EvictionPlan
from oci_ref.storage.postgres_schema import CONTENT_TABLES

Choose = Callable[[list[CachedManifest], list[CachedLink], int], EvictionPlan]


def cache_range(prefix: str) -> tuple[str, str]:
    return f'{prefix}/', f'{prefix}0'


async def _snapshot(conn: Any, bounds: dict[str, str]
                    ) -> tuple[list[CachedManifest], list[CachedLink]]:
    async with conn.pipeline():
        refs = await conn.execute(
            'SELECT repo, digest, child FROM manifest_refs '
            'WHERE repo >= %(lo)s AND repo < %(hi)s', bounds)
        found = await conn.execute(
            'SELECT m.repo, m.digest, m.size, COALESCE(u.used_at, m.created_at) '
            'FROM manifests m LEFT JOIN cache_used u '
            'ON u.repo = m.repo AND u.digest = m.digest '
            'WHERE m.repo >= %(lo)s AND m.repo < %(hi)s', bounds)
        linked = await conn.execute(
            'SELECT l.repo, l.digest, b.size, l.created_at FROM repo_blobs l '
            'JOIN blobs b ON b.digest = l.digest '
            'WHERE l.repo >= %(lo)s AND l.repo < %(hi)s', bounds)
    children: dict[tuple[str, str], list[str]] = {}
    for repo, digest, child in await refs.fetchall():
        children.setdefault((repo, digest), []).append(child)
    manifests = [CachedManifest(repo, digest, int(size), float(used or 0),
                                tuple(children.get((repo, digest), ())))
                 for repo, digest, size, used in await found.fetchall()]
    links = [CachedLink(repo, digest, int(size), float(at or 0))
             for repo, digest, size, at in await linked.fetchall()]
    return manifests, links


# The evicted manifests with their tags, cached tags, references and last uses, and
# the evicted blob links, in one statement.
_REMOVE = (
    'WITH d AS (SELECT * FROM unnest(%(repos)s::text[], %(digests)s::text[]) '
    'AS d(repo, digest)), '
    'm AS (DELETE FROM manifests x USING d WHERE x.repo = d.repo AND '
    'x.digest = d.digest), '
    't AS (DELETE FROM tags x USING d WHERE x.repo = d.repo AND x.digest = d.digest), '
    'c AS (DELETE FROM cache_tags x USING d WHERE x.repo = d.repo AND '
    'x.digest = d.digest), '
    'r AS (DELETE FROM manifest_refs x USING d WHERE x.repo = d.repo AND '
    'x.digest = d.digest), '
    'u AS (DELETE FROM cache_used x USING d WHERE x.repo = d.repo AND '
    'x.digest = d.digest), '
    'l AS (DELETE FROM repo_blobs x USING unnest(%(link_repos)s::text[], '
    '%(link_digests)s::text[]) AS k(repo, digest) WHERE x.repo = k.repo AND '
    'x.digest = k.digest) '
    'SELECT 1')
# Of the candidates, the blob rows nothing keeps any more: no link in any
# repository and no reference from any kept manifest, pushed or cached (the
# statement sees _REMOVE's deletions: it runs after it).
_UNKEPT = (
    'DELETE FROM blobs b WHERE b.digest = ANY(%(candidates)s::text[]) AND '
    'NOT EXISTS (SELECT 1 FROM repo_blobs l WHERE l.digest = b.digest) AND '
    'NOT EXISTS (SELECT 1 FROM manifest_refs r WHERE r.child = b.digest) '
    'RETURNING digest, size')
_EMPTY = (
    'DELETE FROM repositories r WHERE name >= %(lo)s AND name < %(hi)s AND '
    'NOT EXISTS (SELECT 1 FROM manifests m WHERE m.repo = r.name) AND '
    'NOT EXISTS (SELECT 1 FROM repo_blobs l WHERE l.repo = r.name) AND '
    'NOT EXISTS (SELECT 1 FROM tags t WHERE t.repo = r.name)')


async def evict(conn: Any, prefix: str, cap: int, choose: Choose) -> Evicted:
    """One transaction: choose what goes under ``prefix`` to come under ``cap`` and
    remove it (see the module's docstring); the blobs whose rows went, for the
    caller to delete after the commit, holding the GC lease."""
    lo, hi = cache_range(prefix)
    bounds = {'lo': lo, 'hi': hi}
    loop = asyncio.get_running_loop()
    async with conn.transaction():
        manifests, links = await _snapshot(conn, bounds)
        plan = await loop.run_in_executor(None, choose, manifests, links, cap)
        if not (plan.manifests or plan.links):
            return Evicted(plan.usage, plan.freed, [], [], [])
        # Writers wait (readers do not) until this commits.
        await conn.execute(f'LOCK TABLE {CONTENT_TABLES} IN EXCLUSIVE MODE')
        manifests, links = await _snapshot(conn, bounds)
        plan = await loop.run_in_executor(None, choose, manifests, links, cap)
        # Candidates: the blobs of the dropped links, and what the evicted
        # manifests referenced (a blob kept earlier only by their reference).
        children = {(m.repo, m.digest): m.children for m in manifests}
        candidates = list(dict.fromkeys([d for _, d in plan.links] + [
            c for key in plan.manifests for c in children.get(key, ())]))
        async with conn.pipeline():
            await conn.execute(_REMOVE, {
                'repos': [r for r, _ in plan.manifests],
                'digests': [d for _, d in plan.manifests],
                'link_repos': [r for r, _ in plan.links],
                'link_digests': [d for _, d in plan.links]})
            gone = await conn.execute(_UNKEPT, {'candidates': candidates})
            await conn.execute(_EMPTY, bounds)
        sizes = {d: int(s) for d, s in await gone.fetchall()}
    blobs = [(d, sizes[d]) for d in candidates if d in sizes]
    return Evicted(plan.usage, plan.freed, list(plan.manifests), list(plan.links), blobs)


class PostgresEvictQueries:
    """Eviction's MetadataStore methods, mixed into the PostgreSQL store (which
    provides ``_one`` and ``_call``)."""

    _one: Callable[..., Awaitable[Any]]
    _all: Callable[..., Awaitable[list[Any]]]
    _call: Callable[..., Awaitable[Any]]

    async def touch_cached(self, repo: str, digest: str, now: float) -> None:
        await self._one('INSERT INTO cache_used (repo, digest, used_at) '
                        'VALUES (%s, %s, %s) ON CONFLICT (repo, digest) DO UPDATE SET '
                        'used_at = greatest(cache_used.used_at, excluded.used_at) '
                        'RETURNING 1', [repo, digest, now])

    async def cache_usage(self, prefix: str) -> int:
        lo, hi = cache_range(prefix)
        row = await self._one(
            'SELECT (SELECT COALESCE(sum(size), 0) FROM manifests WHERE repo >= %(lo)s '
            'AND repo < %(hi)s) + (SELECT COALESCE(sum(size), 0) FROM blobs WHERE '
            'digest IN (SELECT digest FROM repo_blobs WHERE repo >= %(lo)s AND '
            'repo < %(hi)s))', {'lo': lo, 'hi': hi})
        return int(row[0])

    async def evict_cached(self, prefix: str, cap: int, choose: Choose) -> Evicted:
        result: Evicted = await self._call(evict, prefix, cap, choose)
        return result

    async def cache_counts(self, prefixes: list[str]) -> dict[str, int]:
        """As sqlite_evict.cache_counts: a blob both cached and pushed is pushed."""
        bounds = [cache_range(p) for p in prefixes]
        params = {'lo': [b[0] for b in bounds], 'hi': [b[1] for b in bounds]}
        cached = ('EXISTS (SELECT 1 FROM unnest(%(lo)s::text[], %(hi)s::text[]) '
                  'AS r(lo, hi) WHERE {col} >= r.lo AND {col} < r.hi)')
        m, lk = cached.format(col='m.repo'), cached.format(col='l.repo')
        row = await self._one(
            f'SELECT (SELECT count(*) FROM manifests m WHERE {m}), '
            f'(SELECT count(*) FROM manifests m WHERE NOT {m}), '
            f'(SELECT count(*) FROM repo_blobs l WHERE {lk}), '
            f'(SELECT count(DISTINCT l.digest) FROM repo_blobs l WHERE {lk} AND '
            f'l.digest NOT IN (SELECT l.digest FROM repo_blobs l WHERE NOT {lk})), '
            f'(SELECT count(DISTINCT l.digest) FROM repo_blobs l WHERE NOT {lk})',
            params)
        keys = ('cached_manifests', 'pushed_manifests', 'cached_blob_links',
                'cached_blobs', 'pushed_blobs')
        return dict(zip(keys, (int(v) for v in row), strict=True))

    async def cache_uses(self) -> list[tuple[str, str, float]]:
        return [(r, d, float(at)) for r, d, at in await self._all(
            'SELECT repo, digest, used_at FROM cache_used ORDER BY repo, digest')]


__all__ = ['PostgresEvictQueries', 'cache_range']
