"""The shared metadata store: PostgreSQL, for replicas (issue 14).

``metadata_store = "postgresql://user@host/db"`` (libpq URL; PG* variables and
~/.pgpass apply). The schema and its migrations are in ``postgres_schema.py``; the
web view's queries in ``postgres_views.py``. It answers exactly as ``sqlite.py``
does; what differs is how.

Driver: psycopg 3 async with a psycopg_pool ``AsyncConnectionPool`` (``metadata_pool``
connections per process) on the store's own event loop in a thread
(``loop_thread.py``: the store is built before any loop runs and is called from
several). Connections are in autocommit mode: a method that is one statement is one
round trip (several writes are folded into one statement with data-modifying CTEs:
a blob commit links the blob, closes the session and drops its leases in one);
the few that need a transaction send it pipelined.

Timeouts: a lock held elsewhere longer than ``busy_timeout_ms`` (``lock_timeout``),
no pool connection within that time, or no answer within :data:`DEADLINE` seconds
becomes :class:`StoreUnavailable` ("metadata (postgresql): ..."), a 503; so does a
refused or lost connection (the pool replaces it).

Locks: lease rows in ``locks``, as in SQLite, taken under a transaction-scoped
advisory lock and freed at once when their process dies (its presence advisory lock
goes with its connection); ``postgres_locks.py`` says why not session advisory locks.
The GC sweep and the cache's eviction (``postgres_evict.py``) lock the content
tables against writers (``LOCK TABLE ... IN EXCLUSIVE MODE``) for their one
transaction, as SQLite's write lock does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from oci_ref.storage import postgres_views as views
from oci_ref.storage.interfaces import (
    Claim,
    Clock,
    Lease,
    ManifestGraph,
    ManifestRecord,
    Referrer,
    SessionBusy,
    StoredManifest,
    StoreStats,
    StoreUnavailable,
    Sweep,
    TagDetail,
    Unreachable,
    Upload,
)
from oci_ref.storage.loop_thread import LoopThread
from oci_ref.storage.postgres_auth import AuthQueries
from oci_ref.storage.postgres_cache import PostgresCacheQueries
from oci_ref.storage.postgres_evict import PostgresEvictQueries
from oci_ref.storage.postgres_locks import SERVER_NOW, LeaseLocks
from oci_ref.storage.postgres_schema import (
    CONTENT_TABLES,
    LOCK_SPACE,
    UPLOAD_CAP,
    migrate,
)

T = TypeVar('T')

DEADLINE = 30.0   # seconds a call may take before it is a 503 (GC's sweep: no limit)
PAGE = 200
RETRIES = 2       # more tries of a transaction PostgreSQL rolled back (deadlock)

_UPLOAD_COLS = 'id, repo, size, algorithm, updated_at, hash_state'
_MANIFEST_COLS = 'm.digest, m.media_type, m.size, m.content'
# A CTE dropping the leases a write ends, in that write's statement.
_RELEASE = ('released AS (DELETE FROM locks WHERE (name, owner) IN '
            '(SELECT * FROM unnest(%(lock_names)s::text[], %(lock_owners)s::text[])))')
_LINK = ('r AS (INSERT INTO repositories (name, created_at) VALUES (%(repo)s, %(now)s) '
         'ON CONFLICT DO NOTHING), '
         'b AS (INSERT INTO blobs (digest, size, created_at) VALUES (%(digest)s, %(size)s, '
         '%(now)s) ON CONFLICT DO NOTHING), '
         # A push or mount renews the link: GC's grace counts from the last one.
         'k AS (INSERT INTO repo_blobs (repo, digest, created_at) VALUES (%(repo)s, '
         '%(digest)s, %(now)s) ON CONFLICT (repo, digest) DO UPDATE SET '
         'created_at = excluded.created_at)')


def _releasing(leases: Sequence[Lease]) -> dict[str, list[str]]:
    return {'lock_names': [lease.name for lease in leases],
            'lock_owners': [lease.owner for lease in leases]}


def _released(leases: Sequence[Lease]) -> None:
    for lease in leases:
        lease.released = True


def _first_line(ex: BaseException) -> str:
    return (str(ex).strip().splitlines() or [type(ex).__name__])[0]


class PostgresMetadataStore(PostgresCacheQueries, PostgresEvictQueries, LeaseLocks,
                            AuthQueries):
    """The :class:`~oci_ref.storage.interfaces.MetadataStore` on a PostgreSQL database
    shared by every replica. Built once per process; migrates at start."""

    name = 'metadata (postgresql)'

    def __init__(self, url: str, *, pool_size: int = 10, busy_timeout_ms: int = 10000,
                 clock: Clock = time.time):
        self.url = url
        self.pool_size = pool_size
        self.busy_timeout_ms = busy_timeout_ms
        self.clock = clock
        self._proc = uuid.uuid4().hex[:12]
        self._presence: Any = None
        self._presence_key = 0
        self._watchdog: asyncio.Task[None] | None = None
        self._closed = False
        self._thread = LoopThread('oci-ref-pg')
        self._pool = AsyncConnectionPool(
            url, min_size=1, max_size=pool_size, open=False, name='oci-ref-metadata',
            timeout=busy_timeout_ms / 1000,
            kwargs={'autocommit': True, 'connect_timeout': 10,
                    'options': f'-c lock_timeout={int(busy_timeout_ms)}'})
        try:
            self._thread.call(self._open())
        except BaseException:
            self.close()
            raise

    async def _open(self) -> None:
        try:
            conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True,
                                                         connect_timeout=10)
            # The pool connects meanwhile; the migrating connection stays as the
            # presence connection.
            await self._pool.open(wait=False)
            try:
                await migrate(conn)
                await self._hold_presence(conn)
            except BaseException:
                await conn.close()
                raise
        except (psycopg.Error, PoolTimeout) as ex:
            raise StoreUnavailable(self.name, _first_line(ex)) from None
        self._watchdog = asyncio.get_running_loop().create_task(self._watch())

    async def _shut(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        await self._pool.close()
        if self._presence is not None:
            with contextlib.suppress(psycopg.Error):
                await self._presence.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._thread.call(self._shut())
        self._thread.stop()

    # -- plumbing ----------------------------------------------------------------------

    async def _call(self, fn: Callable[..., Awaitable[T]], *args: Any,
                    deadline: float | None = DEADLINE) -> T:
        """Run ``fn(conn, *args)`` on a pool connection on the store's loop."""
        async def attempt() -> T:
            # Two transactions that deadlock (or a serialisation failure): the one
            # PostgreSQL rolled back runs again, whole.
            for _ in range(RETRIES):
                try:
                    async with self._pool.connection() as conn:
                        return await fn(conn, *args)
                except (psycopg.errors.DeadlockDetected,
                        psycopg.errors.SerializationFailure):
                    continue
            async with self._pool.connection() as conn:
                return await fn(conn, *args)

        async def run() -> T:
            try:
                async with asyncio.timeout(deadline):
                    return await attempt()
            except PoolTimeout:
                raise StoreUnavailable(self.name, (
                    f'no database connection within {self.busy_timeout_ms} ms '
                    f'(server unreachable, or all {self.pool_size} busy)')) from None
            except psycopg.errors.LockNotAvailable:
                raise StoreUnavailable(self.name, (
                    f'a lock was held elsewhere for {self.busy_timeout_ms} ms')) from None
            except TimeoutError:
                raise StoreUnavailable(self.name,
                                       f'no answer within {deadline:g} s') from None
            except (psycopg.OperationalError, psycopg.InterfaceError) as ex:
                raise StoreUnavailable(self.name, _first_line(ex)) from None

        return await self._thread.run(run())

    async def _one(self, sql: str, params: Any = None) -> Any:
        """The first row of one statement."""
        async def run(conn: Any) -> Any:
            return await (await conn.execute(sql, params)).fetchone()

        return await self._call(run)

    async def _all(self, sql: str, params: Any = None) -> list[Any]:
        async def run(conn: Any) -> list[Any]:
            return await (await conn.execute(sql, params)).fetchall()

        return await self._call(run)

    # -- repositories and blobs --------------------------------------------------------

    async def repo_exists(self, repo: str) -> bool:
        return await self._one('SELECT 1 FROM repositories WHERE name = %s',
                               [repo]) is not None

    async def link_blob(self, repo: str, digest: str, size: int, *,
                        release: Sequence[Lease] = ()) -> None:
        await self._one(f'WITH {_LINK}, {_RELEASE} SELECT 1',
                        {'repo': repo, 'digest': digest, 'size': size,
                         'now': self.clock(), **_releasing(release)})
        _released(release)

    async def blob_size(self, repo: str, digest: str) -> int | None:
        row = await self._one(
            'SELECT b.size FROM repo_blobs r JOIN blobs b ON b.digest = r.digest '
            'WHERE r.repo = %s AND r.digest = %s', [repo, digest])
        return None if row is None else int(row[0])

    async def blob_repos(self, digest: str) -> list[str]:
        rows = await self._all('SELECT repo FROM repo_blobs WHERE digest = %s '
                               'ORDER BY repo', [digest])
        return [r[0] for r in rows]

    async def mount_blob(self, repo: str, digest: str, sources: Sequence[str], *,
                         release: Sequence[Lease] = ()) -> int | None:
        row = await self._one(
            'WITH src AS (SELECT b.size FROM repo_blobs s JOIN blobs b ON '
            'b.digest = s.digest WHERE s.digest = %(digest)s AND '
            's.repo = ANY(%(sources)s::text[]) '
            'ORDER BY array_position(%(sources)s::text[], s.repo::text) LIMIT 1), '
            f'{_RELEASE}, '
            'r AS (INSERT INTO repositories (name, created_at) '
            'SELECT %(repo)s, %(now)s FROM src ON CONFLICT DO NOTHING), '
            'k AS (INSERT INTO repo_blobs (repo, digest, created_at) '
            'SELECT %(repo)s, %(digest)s, %(now)s FROM src ON CONFLICT (repo, digest) '
            'DO UPDATE SET created_at = excluded.created_at) '
            'SELECT size FROM src',
            {'repo': repo, 'digest': digest, 'sources': list(sources),
             'now': self.clock(), **_releasing(release)})
        _released(release)
        return None if row is None else int(row[0])

    async def unlink_blob(self, repo: str, digest: str) -> bool:
        return await self._one('DELETE FROM repo_blobs WHERE repo = %s AND digest = %s '
                               'RETURNING 1', [repo, digest]) is not None

    # -- upload sessions ---------------------------------------------------------------

    async def create_upload(self, session_id: str, repo: str, algorithm: str | None,
                            *, cap: int = 0) -> bool:
        now = self.clock()
        insert = ('INSERT INTO uploads (id, repo, size, algorithm, started_at, '
                  'updated_at) SELECT %(id)s, %(repo)s, 0, %(algorithm)s, %(now)s, '
                  '%(now)s')
        params = {'id': session_id, 'repo': repo, 'algorithm': algorithm, 'now': now,
                  'cap': cap}
        if not cap:
            await self._one(insert + ' RETURNING 1', params)
            return True

        async def run(conn: Any) -> bool:
            # Creations take turns while a cap applies, so the count is exact.
            async with conn.pipeline(), conn.transaction():
                await conn.execute('SELECT pg_advisory_xact_lock(%s, %s)',
                                   [LOCK_SPACE, UPLOAD_CAP])
                cur = await conn.execute(
                    insert + ' WHERE (SELECT count(*) FROM uploads) < %(cap)s '
                    'RETURNING 1', params)
            return await cur.fetchone() is not None

        return await self._call(run)

    async def get_upload(self, session_id: str) -> Upload | None:
        row = await self._one(f'SELECT {_UPLOAD_COLS} FROM uploads WHERE id = %s',
                              [session_id])
        return None if row is None else Upload(*row)

    @asynccontextmanager
    async def claim_upload(self, session_id: str) -> AsyncIterator[Claim]:
        lease = Lease(f'upload:{session_id}', self._owner())
        params = {'id': session_id, 'name': lease.name, 'owner': lease.owner,
                  'now': self.clock()}

        async def claim(conn: Any) -> Upload | None:
            async with conn.pipeline():
                async with conn.transaction():
                    took = await self._take(conn, lease, exclusive=True)
                    # A PATCH starting now is activity: the idle clock starts again.
                    # The state as it was (the caller judges its idle time).
                    found = await conn.execute(
                        f'WITH held AS (SELECT 1 FROM locks WHERE name = %(name)s AND '
                        'owner = %(owner)s), '
                        f'old AS (SELECT {_UPLOAD_COLS} FROM uploads WHERE id = %(id)s '
                        'AND EXISTS (SELECT 1 FROM held) FOR UPDATE), '
                        'u AS (UPDATE uploads SET updated_at = %(now)s WHERE id IN '
                        '(SELECT id FROM old)) SELECT * FROM old', params)
                    await conn.execute(
                        'DELETE FROM locks WHERE name = %(name)s AND owner = %(owner)s '
                        'AND NOT EXISTS (SELECT 1 FROM uploads WHERE id = %(id)s)',
                        params)
                if await took.fetchone() is None:
                    raise SessionBusy(session_id)
                row = await found.fetchone()
            return None if row is None else Upload(*row)

        upload = await self._call(claim)
        if upload is None:
            lease.released = True
            yield Claim(None, lease)
            return
        async with self._held(lease, session_id):
            yield Claim(upload, lease)

    async def set_upload_size(self, session_id: str, size: int,
                              hash_state: bytes | None = None, *,
                              release: Sequence[Lease] = ()) -> None:
        await self._one(
            f'WITH {_RELEASE}, u AS (UPDATE uploads SET size = %(size)s, '
            'updated_at = %(now)s, hash_state = %(state)s WHERE id = %(id)s) SELECT 1',
            {'id': session_id, 'size': size, 'now': self.clock(), 'state': hash_state,
             **_releasing(release)})
        _released(release)

    async def delete_upload(self, session_id: str) -> bool:
        return await self._one('DELETE FROM uploads WHERE id = %s RETURNING 1',
                               [session_id]) is not None

    async def finish_upload(self, session_id: str, repo: str, digest: str,
                            size: int, *, release: Sequence[Lease] = ()) -> None:
        await self._one(
            f'WITH {_LINK}, {_RELEASE}, '
            'u AS (DELETE FROM uploads WHERE id = %(id)s) SELECT 1',
            {'id': session_id, 'repo': repo, 'digest': digest, 'size': size,
             'now': self.clock(), **_releasing(release)})
        _released(release)

    async def expire_uploads(self, idle_before: float, only: str | None = None
                             ) -> list[str]:
        # A session someone holds (a PATCH streaming) is never expired. A claim
        # racing this statement updates the row first: PostgreSQL re-checks
        # updated_at on the new version and keeps it.
        sql = ('DELETE FROM uploads u WHERE updated_at < %(before)s AND NOT EXISTS '
               "(SELECT 1 FROM locks l WHERE l.name = 'upload:' || u.id AND "
               f'l.expires_at >= {SERVER_NOW})')
        if only is not None:
            sql += ' AND id = %(only)s'
        rows = await self._all(sql + ' RETURNING id',
                               {'before': idle_before, 'only': only})
        return sorted(r[0] for r in rows)

    async def upload_ids(self) -> set[str]:
        return {r[0] for r in await self._all('SELECT id FROM uploads')}

    # -- a scale-out blob store's spool state (opaque here) ---------------------------

    async def spool_state(self, spool_id: str) -> bytes | None:
        row = await self._one('SELECT state FROM blob_spools WHERE id = %s', [spool_id])
        return None if row is None else bytes(row[0])

    async def set_spool_state(self, spool_id: str, state: bytes) -> None:
        await self._one('INSERT INTO blob_spools (id, state, updated_at) '
                        'VALUES (%s, %s, %s) ON CONFLICT (id) DO UPDATE SET '
                        'state = excluded.state, updated_at = excluded.updated_at '
                        'RETURNING 1', [spool_id, state, self.clock()])

    async def delete_spool_state(self, spool_id: str) -> None:
        await self._one('DELETE FROM blob_spools WHERE id = %s RETURNING 1', [spool_id])

    async def spool_states(self) -> list[tuple[str, float]]:
        return [(r[0], float(r[1])) for r in await self._all(
            'SELECT id, updated_at FROM blob_spools ORDER BY id')]

    # -- manifests and tags ------------------------------------------------------------

    async def put_manifest(
        self, repo: str, digest: str, media_type: str, content: bytes, *,
        subject: str | None, artifact_type: str | None,
        annotations: dict[str, str] | None, blobs: Sequence[str],
        children: Sequence[str], tags: Sequence[str], sparse: bool = False,
    ) -> list[str]:
        blob_list = list(dict.fromkeys(blobs))
        child_list = list(dict.fromkeys(children))
        params = {
            'repo': repo, 'digest': digest, 'media_type': media_type,
            'size': len(content), 'content': content, 'subject': subject,
            'artifact_type': artifact_type, 'now': self.clock(),
            'annotations': None if annotations is None else json.dumps(annotations),
            'refs': list(dict.fromkeys([*blobs, *children])),
            # Sorted: two pushes tagging alike take the rows' locks in one order.
            'tags': sorted(set(tags)),
        }

        async def run(conn: Any) -> list[str]:
            # Pipelined: the check is one round trip, the write and commit another.
            async with conn.pipeline(), conn.transaction():
                # sparse: references are recorded, their content need not be here.
                if not sparse and (blob_list or child_list):
                    # FOR SHARE: what was found stays until this commits.
                    cur = await conn.execute(
                        'SELECT digest FROM repo_blobs WHERE repo = %s AND '
                        'digest = ANY(%s::text[]) FOR SHARE',
                        [repo, blob_list + child_list])
                    linked = {r[0] for r in await cur.fetchall()}
                    missing = [d for d in blob_list if d not in linked]
                    wanted = [d for d in child_list if d not in linked]
                    if wanted:
                        cur = await conn.execute(
                            'SELECT digest FROM manifests WHERE repo = %s AND '
                            'digest = ANY(%s::text[]) FOR SHARE', [repo, wanted])
                        stored = {r[0] for r in await cur.fetchall()}
                        missing += [d for d in wanted if d not in stored]
                    if missing:
                        return missing
                await conn.execute(
                    'WITH r AS (INSERT INTO repositories (name, created_at) VALUES '
                    '(%(repo)s, %(now)s) ON CONFLICT DO NOTHING), '
                    'm AS (INSERT INTO manifests (repo, digest, media_type, size, '
                    'content, subject, artifact_type, annotations, created_at) VALUES '
                    '(%(repo)s, %(digest)s, %(media_type)s, %(size)s, %(content)s, '
                    '%(subject)s, %(artifact_type)s, %(annotations)s, %(now)s) '
                    'ON CONFLICT (repo, digest) DO UPDATE SET '
                    'media_type = excluded.media_type), '
                    'c AS (INSERT INTO manifest_refs (repo, digest, child) '
                    'SELECT %(repo)s, %(digest)s, unnest(%(refs)s::text[]) '
                    'ON CONFLICT DO NOTHING) '
                    'INSERT INTO tags (repo, tag, digest, updated_at) '
                    'SELECT %(repo)s, unnest(%(tags)s::text[]), %(digest)s, %(now)s '
                    'ON CONFLICT (repo, tag) DO UPDATE SET digest = excluded.digest, '
                    'updated_at = excluded.updated_at', params)
            return []

        return await self._call(run)

    async def get_manifest(self, repo: str, digest: str) -> ManifestRecord | None:
        row = await self._one(f'SELECT {_MANIFEST_COLS} FROM manifests m '
                              'WHERE m.repo = %s AND m.digest = %s', [repo, digest])
        return None if row is None else ManifestRecord(*row)

    async def get_tagged_manifest(self, repo: str, tag: str) -> ManifestRecord | None:
        row = await self._one(
            f'SELECT {_MANIFEST_COLS} FROM tags t JOIN manifests m '
            'ON m.repo = t.repo AND m.digest = t.digest '
            'WHERE t.repo = %s AND t.tag = %s', [repo, tag])
        return None if row is None else ManifestRecord(*row)

    async def delete_manifest(self, repo: str, digest: str) -> bool:
        row = await self._one(_DELETE_MANIFESTS, {'repos': [repo], 'digests': [digest]})
        return bool(row and row[0])

    async def delete_tag(self, repo: str, tag: str) -> bool:
        return await self._one('DELETE FROM tags WHERE repo = %s AND tag = %s '
                               'RETURNING 1', [repo, tag]) is not None

    # -- listings ----------------------------------------------------------------------

    async def tags(self, repo: str, last: str | None, limit: int) -> list[str] | None:
        row = await self._one(
            'SELECT EXISTS (SELECT 1 FROM repositories WHERE name = %(repo)s), '
            'ARRAY(SELECT tag FROM tags WHERE repo = %(repo)s AND tag > %(last)s '
            'ORDER BY tag LIMIT %(limit)s)',
            {'repo': repo, 'last': last or '', 'limit': limit})
        return list(row[1]) if row[0] else None

    async def repositories(self, last: str | None, limit: int,
                           readable: Callable[[str], bool] | None = None) -> list[str]:
        names: list[str] = []
        after = last or ''
        batch_size = max(limit, 100)
        while len(names) < limit:
            batch = [r[0] for r in await self._all(
                'SELECT name FROM repositories WHERE name > %s ORDER BY name LIMIT %s',
                [after, batch_size])]
            names += [n for n in batch if readable is None or readable(n)]
            if len(batch) < batch_size:
                break
            after = batch[-1]
        return names[:limit]

    async def referrers(self, repo: str, subject: str, artifact_type: str | None,
                        last: str | None, limit: int) -> list[Referrer]:
        sql = ('SELECT digest, media_type, size, artifact_type, annotations '
               'FROM manifests WHERE repo = %s AND subject = %s AND digest > %s')
        params: list[Any] = [repo, subject, last or '']
        if artifact_type is not None:
            sql += ' AND artifact_type = %s'
            params.append(artifact_type)
        sql += ' ORDER BY digest LIMIT %s'
        params.append(limit)
        return [Referrer(d, mt, int(size), at, None if ann is None else json.loads(ann))
                for d, mt, size, at, ann in await self._all(sql, params)]

    # -- views for the web UI (oci_ref/ui/model.py; queries in postgres_views.py) ---

    async def tag_count(self, repo: str) -> int:
        return await self._call(views.tag_count, repo)

    async def tag_details(self, repo: str, *, by_pushed: bool, descending: bool,
                          offset: int, limit: int) -> list[TagDetail]:
        return await self._call(views.tag_details, repo, by_pushed, descending, offset,
                                limit)

    async def tags_of(self, repo: str, digest: str) -> list[tuple[str, float]]:
        return await self._call(views.tags_of, repo, digest)

    async def tags_with_prefix(self, repo: str, prefix: str, limit: int) -> list[str]:
        return await self._call(views.tags_with_prefix, repo, prefix, limit)

    async def repository_stats(self, repos: Sequence[str]
                               ) -> dict[str, tuple[int, int]]:
        return await self._call(views.repository_stats, list(repos))

    async def manifest_pushed_at(self, repo: str, digest: str) -> float | None:
        return await self._call(views.manifest_pushed_at, repo, digest)

    # -- GC, fsck, operations ----------------------------------------------------------

    async def sweep(self, cutoff: float, *, unreachable: Unreachable | None,
                    dry_run: bool) -> Sweep:
        async def run(conn: Any) -> Sweep:
            result = Sweep()
            async with conn.transaction() as tx:
                # Writers wait (readers do not) until this commits: what the sweep
                # found unreferenced stays so while it deletes.
                await conn.execute(f'LOCK TABLE {CONTENT_TABLES} IN EXCLUSIVE MODE')
                if unreachable is not None:
                    graphs = await _graphs(conn)
                    loop = asyncio.get_running_loop()

                    def choose() -> None:
                        for graph in graphs:
                            doomed = unreachable(graph, cutoff)
                            result.manifests += [(graph.repo, d) for d in doomed]
                            result.young_manifests += [
                                (graph.repo, d) for d in unreachable(graph, float('inf'))
                                if d not in doomed]

                    await loop.run_in_executor(None, choose)
                    if result.manifests:
                        await conn.execute(_DELETE_MANIFESTS, {
                            'repos': [r for r, _ in result.manifests],
                            'digests': [d for _, d in result.manifests]})
                cur = await conn.execute(
                    'SELECT l.repo, l.digest, l.created_at FROM repo_blobs l WHERE '
                    'NOT EXISTS (SELECT 1 FROM manifest_refs m WHERE m.repo = l.repo '
                    'AND m.child = l.digest) ORDER BY l.created_at, l.repo, l.digest')
                unreferenced = await cur.fetchall()
                result.links = [(r, d) for r, d, t in unreferenced if t < cutoff]
                result.young_links = [(r, d) for r, d, t in unreferenced if t >= cutoff]
                await conn.execute(
                    'DELETE FROM repo_blobs WHERE (repo, digest) IN '
                    '(SELECT * FROM unnest(%s::text[], %s::text[]))',
                    [[r for r, _ in result.links], [d for _, d in result.links]])
                cur = await conn.execute(
                    'DELETE FROM blobs b WHERE NOT EXISTS (SELECT 1 FROM repo_blobs l '
                    'WHERE l.digest = b.digest) RETURNING digest, size, created_at')
                result.blobs = [(d, int(s)) for d, s, _ in sorted(
                    await cur.fetchall(), key=lambda r: (r[2], r[0]))]
                cur = await conn.execute(
                    'DELETE FROM repositories r WHERE '
                    'NOT EXISTS (SELECT 1 FROM tags t WHERE t.repo = r.name) AND '
                    'NOT EXISTS (SELECT 1 FROM manifests m WHERE m.repo = r.name) AND '
                    'NOT EXISTS (SELECT 1 FROM repo_blobs l WHERE l.repo = r.name) '
                    'RETURNING name')
                result.repositories = sorted(r[0] for r in await cur.fetchall())
                if dry_run:
                    raise psycopg.Rollback(tx)
            return result

        return await self._call(run, deadline=None)

    async def blob_sizes(self) -> dict[str, int]:
        return {d: int(s) for d, s in await self._all('SELECT digest, size FROM blobs')}

    async def manifests(self) -> AsyncIterator[StoredManifest]:
        after = ('', '')
        while True:
            batch = [StoredManifest(*r) for r in await self._all(
                'SELECT repo, digest, content FROM manifests WHERE (repo, digest) > '
                '(%s, %s) ORDER BY repo, digest LIMIT %s', [*after, PAGE])]
            for m in batch:
                yield m
            if len(batch) < PAGE:
                return
            after = (batch[-1].repo, batch[-1].digest)

    async def dangling_references(self) -> list[tuple[str, str, str]]:
        rows = await self._all(
            'SELECT r.repo, r.digest, r.child FROM manifest_refs r WHERE NOT EXISTS '
            '(SELECT 1 FROM repo_blobs l WHERE l.repo = r.repo AND l.digest = r.child) '
            'AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.repo = r.repo '
            'AND m.digest = r.child) ORDER BY r.repo, r.digest, r.child')
        return [tuple(r) for r in rows]

    async def forget_blob(self, digest: str) -> None:
        await self._one('WITH l AS (DELETE FROM repo_blobs WHERE digest = %(d)s) '
                        'DELETE FROM blobs WHERE digest = %(d)s RETURNING 1',
                        {'d': digest})

    async def stats(self) -> StoreStats:
        row = await self._one(
            'SELECT (SELECT count(*) FROM uploads), '
            '(SELECT COALESCE(sum(size), 0) FROM uploads), '
            '(SELECT COALESCE(sum(size), 0) FROM blobs), '
            '(SELECT COALESCE(sum(size), 0) FROM manifests), '
            '(SELECT count(*) FROM repositories), (SELECT count(*) FROM blobs), '
            '(SELECT count(*) FROM manifests), (SELECT count(*) FROM tags)')
        return StoreStats(*(int(v) for v in row))

    async def check(self) -> str:
        try:
            row = await self._one('SELECT pg_is_in_recovery()')
        except StoreUnavailable as ex:
            return f'database not reachable: {ex.reason}'
        return 'database is a read-only standby' if row[0] else 'ok'


# The manifests (repos[i], digests[i]) with their tags and references, in one
# statement (spec §Deleting: deleting a manifest deletes the tags pointing at it).
_DELETE_MANIFESTS = (
    'WITH d AS (SELECT * FROM unnest(%(repos)s::text[], %(digests)s::text[]) '
    'AS d(repo, digest)), '
    'm AS (DELETE FROM manifests x USING d WHERE x.repo = d.repo AND '
    'x.digest = d.digest RETURNING x.repo, x.digest), '
    't AS (DELETE FROM tags x USING m WHERE x.repo = m.repo AND x.digest = m.digest), '
    'r AS (DELETE FROM manifest_refs x USING m WHERE x.repo = m.repo AND '
    'x.digest = m.digest) '
    'SELECT count(*) FROM m')


async def _graphs(conn: Any) -> list[ManifestGraph]:
    graphs: dict[str, ManifestGraph] = {}
    cur = await conn.execute('SELECT repo, digest, created_at, subject FROM manifests')
    for repo, digest, created, subject in await cur.fetchall():
        g = graphs.get(repo)
        if g is None:
            g = graphs[repo] = ManifestGraph(repo, {}, {}, {}, set())
        g.created[digest] = created
        if subject:
            g.subjects[digest] = subject
    cur = await conn.execute('SELECT repo, digest, child FROM manifest_refs')
    for repo, digest, child in await cur.fetchall():
        if repo in graphs:
            graphs[repo].children.setdefault(digest, []).append(child)
    cur = await conn.execute('SELECT repo, digest FROM tags')
    for repo, digest in await cur.fetchall():
        if repo in graphs:
            graphs[repo].tagged.add(digest)
    return list(graphs.values())


__all__ = ['PostgresMetadataStore']
