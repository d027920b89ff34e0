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
- The choice is made on a snapshot read without any lock (a large cache takes a
  while to read and choose from). The removal is one transaction that locks the
  content tables against writers (``LOCK TABLE ... IN EXCLUSIVE MODE``; readers
  go on) and re-checks each row on what is there then, so what the choice no
  longer holds for stays: a manifest served since the snapshot, a link a kept
  manifest of its repository references (one stored meanwhile on another replica
  included: the lock waits for its transaction), a link renewed by a fetch or
  push; a blob row goes only when nothing links or references it, an empty
  repository only when empty, each judged under the lock, which then holds
  while nothing can change them. The lock is held for those few statements only,
  and not at all when the choice removes nothing (a cache over its cap only by
  content younger than ``cache_min_age``). What was kept back is left for the
  next check (after the next fetch, or the purge round).

An upstream's cached content is the key range ``'<name>/' <= repo < '<name>0'``,
as in sqlite_evict.py (the columns sort bytewise, COLLATE "C").
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from oci_ref.storage.interfaces import (
    CachedLink,
    CachedManifest,
    Choose,
    Evicted,
    cache_range,
)
from oci_ref.storage.postgres_schema import CONTENT_TABLES


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


# The chosen manifests still as they were chosen (not served since: a later use
# would make them no longer the least recently used), with their tags, cached
# tags, references and last uses; the ones removed.
_REMOVE_MANIFESTS = (
    'WITH d AS (SELECT * FROM unnest(%(repos)s::text[], %(digests)s::text[], '
    '%(used)s::float8[]) AS d(repo, digest, used_at)), '
    'g AS (SELECT m.repo, m.digest FROM manifests m JOIN d ON m.repo = d.repo AND '
    'm.digest = d.digest LEFT JOIN cache_used u ON u.repo = m.repo AND '
    'u.digest = m.digest WHERE COALESCE(u.used_at, m.created_at) <= d.used_at), '
    'm AS (DELETE FROM manifests x USING g WHERE x.repo = g.repo AND '
    'x.digest = g.digest RETURNING x.repo, x.digest), '
    't AS (DELETE FROM tags x USING m WHERE x.repo = m.repo AND x.digest = m.digest), '
    'c AS (DELETE FROM cache_tags x USING m WHERE x.repo = m.repo AND '
    'x.digest = m.digest), '
    'r AS (DELETE FROM manifest_refs x USING m WHERE x.repo = m.repo AND '
    'x.digest = m.digest), '
    'u AS (DELETE FROM cache_used x USING m WHERE x.repo = m.repo AND '
    'x.digest = m.digest) '
    'SELECT repo, digest FROM m')
# The chosen blob links no kept manifest of their repository references now (the
# rule choose() applied; it sees _REMOVE_MANIFESTS' deletions: it runs after),
# not linked again since (a push or fetch renews created_at); the ones removed.
_REMOVE_LINKS = (
    'DELETE FROM repo_blobs x USING unnest(%(repos)s::text[], %(digests)s::text[], '
    '%(at)s::float8[]) AS k(repo, digest, at) WHERE x.repo = k.repo AND '
    'x.digest = k.digest AND x.created_at <= k.at AND NOT EXISTS (SELECT 1 FROM '
    'manifest_refs r WHERE r.repo = x.repo AND r.child = x.digest) '
    'RETURNING x.repo, x.digest')
# Of the candidates, the blob rows nothing keeps any more: no link in any
# repository and no reference from any kept manifest, pushed or cached.
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
    """Choose what goes under ``prefix`` to come under ``cap``, then remove it in
    one transaction (see the module's docstring); the blobs whose rows went, for
    the caller to delete after the commit, holding the GC lease."""
    lo, hi = cache_range(prefix)
    bounds = {'lo': lo, 'hi': hi}
    manifests, links = await _snapshot(conn, bounds)
    plan = await asyncio.get_running_loop().run_in_executor(
        None, choose, manifests, links, cap)
    if not (plan.manifests or plan.links):
        return Evicted(plan.usage, plan.freed, [], [], [])
    used = {(m.repo, m.digest): m.used_at for m in manifests}
    linked = {(k.repo, k.digest): k.linked_at for k in links}
    # Candidates: the blobs of the dropped links, and what the evicted manifests
    # referenced (a blob kept earlier only by their reference).
    children = {(m.repo, m.digest): m.children for m in manifests}
    candidates = list(dict.fromkeys([d for _, d in plan.links] + [
        c for key in plan.manifests for c in children.get(key, ())]))
    async with conn.transaction():
        # Writers wait (readers do not) until this commits: what the removal
        # checks stays so (module docstring).
        await conn.execute(f'LOCK TABLE {CONTENT_TABLES} IN EXCLUSIVE MODE')
        async with conn.pipeline():
            gone_manifests = await conn.execute(_REMOVE_MANIFESTS, {
                'repos': [r for r, _ in plan.manifests],
                'digests': [d for _, d in plan.manifests],
                'used': [used[key] for key in plan.manifests]})
            gone_links = await conn.execute(_REMOVE_LINKS, {
                'repos': [r for r, _ in plan.links],
                'digests': [d for _, d in plan.links],
                'at': [linked[key] for key in plan.links]})
            gone_blobs = await conn.execute(_UNKEPT, {'candidates': candidates})
            await conn.execute(_EMPTY, bounds)
            removed = {tuple(r) for r in await gone_manifests.fetchall()}
            unlinked = {tuple(r) for r in await gone_links.fetchall()}
            sizes = {d: int(s) for d, s in await gone_blobs.fetchall()}
    # What went, in the plan's order; what it freed, counted as choose() counts.
    evicted = [key for key in plan.manifests if key in removed]
    dropped = [key for key in plan.links if key in unlinked]
    holders = Counter(k.digest for k in links)
    holders.subtract(d for _, d in dropped)
    size = {k.digest: k.size for k in links}
    freed = sum(m.size for m in manifests if (m.repo, m.digest) in removed) + sum(
        size[d] for d in {d for _, d in dropped} if holders[d] == 0)
    blobs = [(d, sizes[d]) for d in candidates if d in sizes]
    return Evicted(plan.usage, freed, evicted, dropped, blobs)


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
