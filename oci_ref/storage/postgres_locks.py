"""Locks on the PostgreSQL metadata: lease rows every replica sees (postgres.py).

Why lease rows and not session-level advisory locks: a session advisory lock lives as
long as its connection, so each held lock (an upload claim lasts a whole PATCH) would
pin one pooled connection (a few hundred parallel PATCHes would starve the pool), and
it could not be dropped in the same transaction as the write that ends it. A lease
row costs no connection while held, is dropped by that write (``release=``), and is
seen by every replica.

Taking one is one pipelined transaction that first takes ``pg_advisory_xact_lock`` on
the lock's name (two takers cannot both find it free; released at commit). A row is
dead when its lease ran out (renewed every 10 s while held; the server's clock, one
for every replica) or when its process is gone: each process holds one session
advisory lock, its *presence*, on one dedicated connection for its whole life (the
row's ``holder``); a process that dies loses that connection and with it its
presence, and its rows are taken over at once, on any replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import psycopg

from oci_ref.storage.interfaces import Clock, Lease, StoreUnavailable
from oci_ref.storage.postgres_schema import LOCK_SPACE, PRESENCE, TAKE_LOCK

LEASE_SECONDS = 30.0
LOCK_POLL = 0.02

SERVER_NOW = 'extract(epoch from clock_timestamp())'
# The holder's process is alive: it holds its presence lock (pg_locks shows every
# session's advisory locks to every role).
_ALIVE = ("EXISTS (SELECT 1 FROM pg_locks p WHERE p.locktype = 'advisory' AND "
          'p.granted AND p.database = (SELECT oid FROM pg_database WHERE '
          f'datname = current_database()) AND p.classid::bigint = {LOCK_SPACE + PRESENCE} '
          'AND p.objsubid = 2 AND p.objid::bigint = {holder})')
_LIVE = f'(l.expires_at >= {SERVER_NOW} AND {_ALIVE.format(holder="l.holder")})'


def alive(holder: str) -> str:
    """SQL that is true while the process whose presence key is in column
    ``holder`` lives (the pull-through cache's download claims use it too)."""
    return _ALIVE.format(holder=holder)


class LeaseLocks:
    """The locks of :class:`~oci_ref.storage.postgres.PostgresMetadataStore` (a
    mixin: the store gives its URL, clock, process id and query helpers)."""

    url: str
    clock: Clock
    _proc: str
    _presence: Any
    _presence_key: int
    _call: Callable[..., Any]
    _all: Callable[..., Any]

    async def _hold_presence(self, conn: Any = None) -> None:
        """Take this process's presence lock on ``conn`` (a new connection if None),
        which then stays open for the process's life."""
        if conn is None:
            conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True,
                                                         connect_timeout=10)
        key = self._presence_key or secrets.randbelow(2**31 - 2) + 1
        while True:
            cur = await conn.execute('SELECT pg_try_advisory_lock(%s, %s)',
                                     [LOCK_SPACE + PRESENCE, key])
            row = await cur.fetchone()
            if row and row[0]:
                break
            key = secrets.randbelow(2**31 - 2) + 1  # taken by another process
        self._presence, self._presence_key = conn, key

    async def _watch(self) -> None:
        """Keep the presence connection alive; reconnect it when it was lost (until
        then this process's leases look dead and only their expiry protects them)."""
        while True:
            await asyncio.sleep(LEASE_SECONDS / 3)
            try:
                await self._presence.execute('SELECT 1')
            except psycopg.Error:
                with contextlib.suppress(psycopg.Error):
                    await self._presence.close()
                with contextlib.suppress(psycopg.Error):
                    await self._hold_presence()

    def _owner(self) -> str:
        return f'{self._proc}-{uuid.uuid4().hex[:8]}'

    async def _take(self, conn: Any, lease: Lease, *, exclusive: bool) -> Any:
        """Queue (in the caller's transaction) taking ``lease`` unless a live holder
        conflicts; the cursor has a row when it was taken."""
        params = {'name': lease.name, 'owner': lease.owner, 'exclusive': exclusive,
                  'holder': self._presence_key, 'lease': LEASE_SECONDS}
        # Takers of one name take turns (until commit), so none misses another's row.
        await conn.execute('SELECT pg_advisory_xact_lock(%s, hashtext(%s))',
                           [LOCK_SPACE + TAKE_LOCK, lease.name])
        await conn.execute(f'DELETE FROM locks l WHERE name = %(name)s AND NOT {_LIVE}',
                           params)
        return await conn.execute(
            'INSERT INTO locks (name, owner, exclusive, holder, expires_at) '
            'SELECT %(name)s, %(owner)s, %(exclusive)s, %(holder)s, '
            f'{SERVER_NOW} + %(lease)s '
            'WHERE NOT EXISTS (SELECT 1 FROM locks l WHERE l.name = %(name)s AND '
            f'(l.exclusive OR %(exclusive)s) AND {_LIVE}) RETURNING 1', params)

    @asynccontextmanager
    async def lock(self, name: str, *, exclusive: bool, wait: bool
                   ) -> AsyncIterator[Lease | None]:
        lease = Lease(name, self._owner())

        async def take(conn: Any) -> bool:
            async with conn.pipeline():
                async with conn.transaction():
                    cur = await self._take(conn, lease, exclusive=exclusive)
                return await cur.fetchone() is not None

        while not await self._call(take):
            if not wait:
                yield None
                return
            await asyncio.sleep(LOCK_POLL)
        async with self._held(lease):
            yield lease

    @asynccontextmanager
    async def _held(self, lease: Lease, session_id: str | None = None
                    ) -> AsyncIterator[None]:
        """Renew the lease (and a claimed session's idle clock) while held; drop it
        at the end, whatever happens, unless a write already did."""
        params = {'name': lease.name, 'owner': lease.owner, 'id': session_id,
                  'lease': LEASE_SECONDS}
        renew = ('WITH l AS (UPDATE locks SET expires_at = '
                 f'{SERVER_NOW} + %(lease)s WHERE name = %(name)s AND owner = %(owner)s) '
                 'UPDATE uploads SET updated_at = %(now)s WHERE id = %(id)s')

        async def renewing() -> None:
            while True:
                await asyncio.sleep(LEASE_SECONDS / 3)
                try:
                    await self._all(renew + ' RETURNING 1',
                                    {**params, 'now': self.clock()})
                except StoreUnavailable:
                    continue  # try again; the lease outlives a few misses

        task = asyncio.get_running_loop().create_task(renewing())
        try:
            yield
        finally:
            task.cancel()
            if not lease.released:
                await self._release(lease, session_id)

    async def _release(self, lease: Lease, session_id: str | None) -> None:
        # Idle time counts from the end of the last activity.
        release = self._all(
            'WITH l AS (DELETE FROM locks WHERE name = %(name)s AND owner = %(owner)s) '
            'UPDATE uploads SET updated_at = %(now)s WHERE id = %(id)s RETURNING 1',
            {'name': lease.name, 'owner': lease.owner, 'id': session_id,
             'now': self.clock()})
        # Even when the request was cancelled: a lock must not outlive its use.
        release_task = asyncio.ensure_future(release)
        try:
            await asyncio.shield(release_task)
        except asyncio.CancelledError:
            await asyncio.wait([release_task])
            raise
        except StoreUnavailable:
            pass  # the lease runs out by itself
        lease.released = True


__all__ = ['LEASE_SECONDS', 'SERVER_NOW', 'LeaseLocks', 'alive']
