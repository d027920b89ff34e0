"""The pull-through cache's queries on the PostgreSQL metadata (issues 13 and 14; the
tables are drawn in postgres_schema.py, version 4). The same answers as
sqlite_cache.py, shared by every replica: a download claimed here is the one
download of that blob for the whole deployment.

One addition: a claim records its owner's presence key (postgres_locks.py), so a
claim whose process died (a replica killed mid-download) is stale at once, as the
leases are, instead of after its heartbeat ages: ``claim_fetch`` takes it over and
``get_fetch`` reports it with heartbeat 0, which ends its followers' wait.

Eviction's queries (last uses, usage, the eviction itself) are postgres_evict.py's."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from oci_ref.storage.interfaces import CacheTag, FetchClaim, StoreUnavailable
from oci_ref.storage.postgres_locks import alive

_COLS = 'owner, spool, size, written, heartbeat'
_DEAD_OR_BEAT = ('CASE WHEN ' + alive('holder') +
                 ' THEN heartbeat ELSE 0 END')

# Take the claim when nobody holds it, its heartbeat went stale or its process is
# gone; else return the holder's row. Under READ COMMITTED, ON CONFLICT waits for a
# concurrent claimer and judges its committed row, but the outer SELECT reads the
# statement's snapshot, which may predate that row: then no row comes back and the
# statement is re-run.
_CLAIM = (
    f'WITH won AS (INSERT INTO cache_fetches (key, {_COLS}, holder) '
    'VALUES (%(key)s, %(owner)s, %(spool)s, NULL, 0, %(now)s, %(holder)s) '
    'ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, spool = excluded.spool, '
    'size = NULL, written = 0, heartbeat = excluded.heartbeat, '
    'holder = excluded.holder WHERE cache_fetches.heartbeat < %(stale)s OR NOT '
    + alive('cache_fetches.holder') + f' RETURNING {_COLS}) '
    f'SELECT {_COLS} FROM won UNION ALL SELECT {_COLS} FROM cache_fetches '
    'WHERE key = %(key)s AND NOT EXISTS (SELECT 1 FROM won)')
CLAIM_ATTEMPTS = 5


def _claim(row: Any) -> FetchClaim:
    return FetchClaim(row[0], row[1], None if row[2] is None else int(row[2]),
                      int(row[3]), float(row[4]))


class PostgresCacheQueries:
    """The pull-through cache's MetadataStore methods, mixed into the PostgreSQL
    store (which provides ``_one``: one statement, its first row)."""

    name: str
    _presence_key: int
    _one: Callable[..., Awaitable[Any]]
    _all: Callable[..., Awaitable[list[Any]]]

    async def cache_tag(self, repo: str, tag: str) -> CacheTag | None:
        row = await self._one('SELECT digest, validated_at FROM cache_tags '
                              'WHERE repo = %s AND tag = %s', [repo, tag])
        return None if row is None else CacheTag(row[0], float(row[1]))

    async def set_cache_tag(self, repo: str, tag: str, digest: str,
                            validated_at: float) -> None:
        await self._one('INSERT INTO cache_tags (repo, tag, digest, validated_at) '
                        'VALUES (%s, %s, %s, %s) ON CONFLICT (repo, tag) DO UPDATE '
                        'SET digest = excluded.digest, '
                        'validated_at = excluded.validated_at RETURNING 1',
                        [repo, tag, digest, validated_at])

    async def claim_fetch(self, key: str, owner: str, spool: str, now: float,
                          stale_before: float) -> FetchClaim:
        params = {'key': key, 'owner': owner, 'spool': spool, 'now': now,
                  'stale': stale_before, 'holder': self._presence_key}
        for _ in range(CLAIM_ATTEMPTS):
            row = await self._one(_CLAIM, params)
            if row is not None:
                return _claim(row)
        # Claimed and ended by others between every attempt: never in practice.
        raise StoreUnavailable(self.name, f'no stable download claim for {key}')

    async def get_fetch(self, key: str) -> FetchClaim | None:
        row = await self._one('SELECT owner, spool, size, written, '
                              f'{_DEAD_OR_BEAT} FROM cache_fetches WHERE key = %s',
                              [key])
        return None if row is None else _claim(row)

    async def update_fetch(self, key: str, owner: str, written: int, size: int | None,
                           now: float) -> bool:
        return await self._one('UPDATE cache_fetches SET written = %s, size = %s, '
                               'heartbeat = %s WHERE key = %s AND owner = %s '
                               'RETURNING 1',
                               [written, size, now, key, owner]) is not None

    async def end_fetch(self, key: str, owner: str) -> None:
        await self._one('DELETE FROM cache_fetches WHERE key = %s AND owner = %s '
                        'RETURNING 1', [key, owner])

    async def cache_tags_validated(self, repo: str, tags: list[str]
                                   ) -> dict[str, float]:
        rows = await self._all('SELECT tag, validated_at FROM cache_tags WHERE '
                               'repo = %s AND tag = ANY(%s::text[])', [repo, list(tags)])
        return {t: float(v) for t, v in rows}
