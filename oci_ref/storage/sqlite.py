"""The embedded metadata store: SQLite (WAL) in ``<root>/oci-ref.db``.

The schema and its migrations are in ``sqlite_schema.py``.

The event-loop rule: every call runs in a bounded thread pool (``threads.py``), one
connection per thread (reads and writes in separate pools, so writers stuck behind a
held write lock never starve the reads of other requests). Each public method is
one thread hop and one transaction; writes take the write lock at once (``BEGIN
IMMEDIATE``), so what they read cannot change before they write. A lock held past
the busy timeout becomes :class:`StoreUnavailable` ("metadata (sqlite): database is
locked"), a 503.

Locks are rows in ``locks``, taken and checked inside a write transaction: an
exclusive lock needs no other live row under its name, a shared one no live
exclusive row. A holder renews its lease while it holds it; a row whose lease ran
out, or whose process is gone (this store is local to one host), is dead and
removed by the next taker. Upload claims are exclusive locks named
``upload:<session id>``; the GC lock is ``gc`` (shared by blob commits).
Lease times use the wall clock; the injected clock only dates content.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from oci_ref.storage import sqlite_views
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
from oci_ref.storage.sqlite_auth import AuthQueries
from oci_ref.storage.sqlite_cache import CacheQueries
from oci_ref.storage.sqlite_evict import EvictQueries
from oci_ref.storage.sqlite_locks import (
    LEASE_SECONDS,
    drop,
    mark_released,
    my_start,
    release_in,
    take,
)
from oci_ref.storage.sqlite_schema import DB_FILE, migrate
from oci_ref.storage.threads import ThreadPool

T = TypeVar('T')

LOCK_POLL = 0.02
READ_POOL = 4
READ_BATCH = 16
WRITE_POOL = 4


_UPLOAD_COLS = 'id, repo, size, algorithm, updated_at, hash_state'
_MANIFEST_COLS = 'm.digest, m.media_type, m.size, m.content'


class SQLiteMetadataStore(CacheQueries, EvictQueries, AuthQueries):
    """The :class:`~oci_ref.storage.interfaces.MetadataStore` on one SQLite file.

    Built once per process at the composition root; safe to share between the
    event loop's coroutines (each call runs in a pool thread on that thread's own
    connection) and between processes (SQLite's locking, the ``locks`` table).
    """

    name = 'metadata (sqlite)'

    def __init__(self, path: Path, *, busy_timeout_ms: int = 10000,
                 clock: Clock = time.time):
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self.clock = clock
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._proc = uuid.uuid4().hex[:12]
        # Reads share wake-ups (they are short and never wait for a lock in WAL
        # mode); writes go one by one, so one stuck behind a held lock holds up no
        # other.
        self._reads = ThreadPool(READ_POOL, 'oci-ref-db-r', batch=READ_BATCH)
        self._writes = ThreadPool(WRITE_POOL, 'oci-ref-db-w')
        # Migrate now, before any request (startup, not on the request path). The
        # connection stays open, closed with the others: closing the only one
        # checkpoints the WAL and deletes it, two more fdatasyncs at the start
        # (issue 17), and the first write would create the WAL again.
        conn = self._connect()
        try:
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        with self._conns_lock:
            self._conns.append(conn)

    def close(self) -> None:
        self._reads.shutdown()
        self._writes.shutdown()
        with self._conns_lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()

    # -- plumbing ----------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path), isolation_level=None,
                               check_same_thread=False, timeout=self.busy_timeout_ms / 1000)
        conn.execute('PRAGMA journal_mode=WAL')
        # WAL + NORMAL: a killed process loses no committed transaction.
        conn.execute('PRAGMA synchronous=NORMAL')
        conn.execute(f'PRAGMA busy_timeout={int(self.busy_timeout_ms)}')
        return conn

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, 'conn', None)
        if conn is None:
            conn = self._local.conn = self._connect()
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        conn = self._conn()
        try:
            return fn(conn, *args)
        except sqlite3.OperationalError as ex:
            if conn.in_transaction:
                conn.execute('ROLLBACK')
            reason = str(ex)
            if 'locked' in reason or 'busy' in reason:
                reason = (f'database is locked (waited {self.busy_timeout_ms} ms for '
                          'another writer)')
            raise StoreUnavailable(self.name, reason) from ex

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._reads.run(self._call, fn, *args)

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._writes.run(self._call, fn, *args)

    # -- repositories and blobs --------------------------------------------------------

    async def repo_exists(self, repo: str) -> bool:
        return await self._read(_repo_exists, repo)

    async def link_blob(self, repo: str, digest: str, size: int, *,
                        release: Sequence[Lease] = ()) -> None:
        def run(conn: sqlite3.Connection) -> None:
            with _tx(conn):
                _link(conn, repo, digest, size, self.clock())
                release_in(conn, release)

        await self._write(run)
        mark_released(release)

    async def blob_size(self, repo: str, digest: str) -> int | None:
        return await self._read(_blob_size, repo, digest)

    async def blob_repos(self, digest: str) -> list[str]:
        def run(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                'SELECT repo FROM repo_blobs WHERE digest = ? ORDER BY repo', [digest])
            return [r[0] for r in rows]

        return await self._read(run)

    async def mount_blob(self, repo: str, digest: str, sources: Sequence[str], *,
                         release: Sequence[Lease] = ()) -> int | None:
        def run(conn: sqlite3.Connection) -> int | None:
            with _tx(conn):
                release_in(conn, release)
                for source in sources:
                    size = _blob_size(conn, source, digest)
                    if size is not None:
                        _link(conn, repo, digest, size, self.clock())
                        return size
            return None

        size = await self._write(run)
        mark_released(release)
        return size

    async def unlink_blob(self, repo: str, digest: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            cur = conn.execute('DELETE FROM repo_blobs WHERE repo = ? AND digest = ?',
                               [repo, digest])
            return cur.rowcount > 0

        return await self._write(run)

    # -- upload sessions ---------------------------------------------------------------

    async def create_upload(self, session_id: str, repo: str, algorithm: str | None,
                            *, cap: int = 0) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            with _tx(conn):
                count = conn.execute('SELECT COUNT(*) FROM uploads').fetchone()[0]
                if cap and count >= cap:
                    return False
                now = self.clock()
                conn.execute(
                    'INSERT INTO uploads (id, repo, size, algorithm, started_at, '
                    'updated_at) VALUES (?, ?, 0, ?, ?, ?)',
                    [session_id, repo, algorithm, now, now])
            return True

        return await self._write(run)

    async def get_upload(self, session_id: str) -> Upload | None:
        return await self._read(_get_upload, session_id)

    @asynccontextmanager
    async def claim_upload(self, session_id: str) -> AsyncIterator[Claim]:
        lease = Lease(f'upload:{session_id}', self._owner())
        name, owner = lease.name, lease.owner

        def claim(conn: sqlite3.Connection) -> Upload | None:
            with _tx(conn):
                if not take(conn, name, owner, True):
                    raise SessionBusy(session_id)
                upload = _get_upload(conn, session_id)
                if upload is None:
                    drop(conn, name, owner)
                    return None
                # A PATCH starting now is activity: the idle clock starts again.
                conn.execute('UPDATE uploads SET updated_at = ? WHERE id = ?',
                             [self.clock(), session_id])
                return upload

        upload = await self._write(claim)
        if upload is None:
            lease.released = True
            yield Claim(None, lease)
            return
        async with self._held(lease, session_id):
            yield Claim(upload, lease)

    async def set_upload_size(self, session_id: str, size: int,
                              hash_state: bytes | None = None, *,
                              release: Sequence[Lease] = ()) -> None:
        def run(conn: sqlite3.Connection) -> None:
            with _tx(conn):
                conn.execute('UPDATE uploads SET size = ?, updated_at = ?, '
                             'hash_state = ? WHERE id = ?',
                             [size, self.clock(), hash_state, session_id])
                release_in(conn, release)

        await self._write(run)
        mark_released(release)

    async def delete_upload(self, session_id: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            cur = conn.execute('DELETE FROM uploads WHERE id = ?', [session_id])
            return cur.rowcount > 0

        return await self._write(run)

    async def finish_upload(self, session_id: str, repo: str, digest: str,
                            size: int, *, release: Sequence[Lease] = ()) -> None:
        def run(conn: sqlite3.Connection) -> None:
            with _tx(conn):
                _link(conn, repo, digest, size, self.clock())
                conn.execute('DELETE FROM uploads WHERE id = ?', [session_id])
                release_in(conn, release)

        await self._write(run)
        mark_released(release)

    async def expire_uploads(self, idle_before: float, only: str | None = None
                             ) -> list[str]:
        def run(conn: sqlite3.Connection) -> list[str]:
            # A session someone holds (a PATCH streaming) is never expired.
            where = ('updated_at < ? AND NOT EXISTS (SELECT 1 FROM locks l WHERE '
                     "l.name = 'upload:' || uploads.id AND l.expires_at >= ?)")
            params: list[Any] = [idle_before, time.time()]
            if only is not None:
                where += ' AND id = ?'
                params.append(only)
            with _tx(conn):
                ids = [r[0] for r in conn.execute(f'SELECT id FROM uploads WHERE {where}',
                                                  params)]
                conn.execute(f'DELETE FROM uploads WHERE {where}', params)
            return ids

        return await self._write(run)

    async def upload_ids(self) -> set[str]:
        def run(conn: sqlite3.Connection) -> set[str]:
            return {r[0] for r in conn.execute('SELECT id FROM uploads')}

        return await self._read(run)

    # -- a scale-out blob store's spool state ------------------------------------------

    async def spool_state(self, spool_id: str) -> bytes | None:
        def run(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute('SELECT state FROM blob_spools WHERE id = ?',
                               [spool_id]).fetchone()
            return None if row is None else bytes(row[0])

        return await self._read(run)

    async def set_spool_state(self, spool_id: str, state: bytes) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute('INSERT INTO blob_spools (id, state, updated_at) VALUES (?, ?, ?) '
                         'ON CONFLICT (id) DO UPDATE SET state = excluded.state, '
                         'updated_at = excluded.updated_at',
                         [spool_id, state, self.clock()])

        await self._write(run)

    async def delete_spool_state(self, spool_id: str) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute('DELETE FROM blob_spools WHERE id = ?', [spool_id])

        await self._write(run)

    async def spool_states(self) -> list[tuple[str, float]]:
        def run(conn: sqlite3.Connection) -> list[tuple[str, float]]:
            return [(r[0], r[1]) for r in
                    conn.execute('SELECT id, updated_at FROM blob_spools ORDER BY id')]

        return await self._read(run)

    # -- manifests and tags ------------------------------------------------------------

    async def put_manifest(
        self, repo: str, digest: str, media_type: str, content: bytes, *,
        subject: str | None, artifact_type: str | None,
        annotations: dict[str, str] | None, blobs: Sequence[str],
        children: Sequence[str], tags: Sequence[str], sparse: bool = False,
    ) -> list[str]:
        def run(conn: sqlite3.Connection) -> list[str]:
            now = self.clock()
            with _tx(conn):
                # sparse: references are recorded, their content need not be here.
                if not sparse:
                    missing = _missing(conn, 'repo_blobs', repo,
                                       list(dict.fromkeys(blobs)))
                    wanted = _missing(conn, 'repo_blobs', repo,
                                      list(dict.fromkeys(children)))
                    missing += _missing(conn, 'manifests', repo, wanted) if wanted else []
                    if missing:
                        return missing
                _ensure_repo(conn, repo, now)
                conn.execute(
                    'INSERT INTO manifests (repo, digest, media_type, size, content, '
                    'subject, artifact_type, annotations, created_at) '
                    'VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (repo, digest) '
                    'DO UPDATE SET media_type = excluded.media_type',
                    [repo, digest, media_type, len(content), content, subject,
                     artifact_type,
                     None if annotations is None else json.dumps(annotations), now])
                conn.executemany(
                    'INSERT OR IGNORE INTO manifest_refs (repo, digest, child) '
                    'VALUES (?, ?, ?)',
                    [(repo, digest, c) for c in dict.fromkeys([*blobs, *children])])
                conn.executemany(
                    'INSERT INTO tags (repo, tag, digest, updated_at) VALUES (?, ?, ?, ?) '
                    'ON CONFLICT (repo, tag) DO UPDATE SET digest = excluded.digest, '
                    'updated_at = excluded.updated_at',
                    [(repo, tag, digest, now) for tag in tags])
            return []

        return await self._write(run)

    async def get_manifest(self, repo: str, digest: str) -> ManifestRecord | None:
        def run(conn: sqlite3.Connection) -> ManifestRecord | None:
            row = conn.execute(f'SELECT {_MANIFEST_COLS} FROM manifests m '
                               'WHERE m.repo = ? AND m.digest = ?', [repo, digest]
                               ).fetchone()
            return None if row is None else ManifestRecord(*row)

        return await self._read(run)

    async def get_tagged_manifest(self, repo: str, tag: str) -> ManifestRecord | None:
        def run(conn: sqlite3.Connection) -> ManifestRecord | None:
            row = conn.execute(
                f'SELECT {_MANIFEST_COLS} FROM tags t JOIN manifests m '
                'ON m.repo = t.repo AND m.digest = t.digest '
                'WHERE t.repo = ? AND t.tag = ?', [repo, tag]).fetchone()
            return None if row is None else ManifestRecord(*row)

        return await self._read(run)

    async def delete_manifest(self, repo: str, digest: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            with _tx(conn):
                return _delete_manifest(conn, repo, digest)

        return await self._write(run)

    async def delete_tag(self, repo: str, tag: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            cur = conn.execute('DELETE FROM tags WHERE repo = ? AND tag = ?', [repo, tag])
            return cur.rowcount > 0

        return await self._write(run)

    # -- listings ----------------------------------------------------------------------

    async def tags(self, repo: str, last: str | None, limit: int) -> list[str] | None:
        def run(conn: sqlite3.Connection) -> list[str] | None:
            if not _repo_exists(conn, repo):
                return None
            rows = conn.execute(
                'SELECT tag FROM tags WHERE repo = ? AND tag > ? ORDER BY tag LIMIT ?',
                [repo, last or '', limit])
            return [r[0] for r in rows]

        return await self._read(run)

    async def repositories(self, last: str | None, limit: int,
                           readable: Callable[[str], bool] | None = None) -> list[str]:
        def run(conn: sqlite3.Connection) -> list[str]:
            names: list[str] = []
            after = last or ''
            batch_size = max(limit, 100)
            while len(names) < limit:
                batch = [r[0] for r in conn.execute(
                    'SELECT name FROM repositories WHERE name > ? ORDER BY name LIMIT ?',
                    [after, batch_size])]
                names += [n for n in batch if readable is None or readable(n)]
                if len(batch) < batch_size:
                    break
                after = batch[-1]
            return names[:limit]

        return await self._read(run)

    # -- views for the web UI (oci_ref/ui/model.py; queries in sqlite_views.py) -----

    async def tag_count(self, repo: str) -> int:
        return await self._read(sqlite_views.tag_count, repo)

    async def tag_details(self, repo: str, *, by_pushed: bool, descending: bool,
                          offset: int, limit: int) -> list[TagDetail]:
        return await self._read(sqlite_views.tag_details, repo, by_pushed, descending,
                                offset, limit)

    async def tags_of(self, repo: str, digest: str) -> list[tuple[str, float]]:
        return await self._read(sqlite_views.tags_of, repo, digest)

    async def tags_with_prefix(self, repo: str, prefix: str, limit: int) -> list[str]:
        return await self._read(sqlite_views.tags_with_prefix, repo, prefix, limit)

    async def repository_stats(self, repos: Sequence[str]
                               ) -> dict[str, tuple[int, int]]:
        return await self._read(sqlite_views.repository_stats, list(repos))

    async def manifest_pushed_at(self, repo: str, digest: str) -> float | None:
        return await self._read(sqlite_views.manifest_pushed_at, repo, digest)


    async def referrers(self, repo: str, subject: str, artifact_type: str | None,
                        last: str | None, limit: int) -> list[Referrer]:
        def run(conn: sqlite3.Connection) -> list[Referrer]:
            sql = ('SELECT digest, media_type, size, artifact_type, annotations '
                   'FROM manifests WHERE repo = ? AND subject = ? AND digest > ?')
            params: list[Any] = [repo, subject, last or '']
            if artifact_type is not None:
                sql += ' AND artifact_type = ?'
                params.append(artifact_type)
            sql += ' ORDER BY digest LIMIT ?'
            params.append(limit)
            return [Referrer(d, mt, size, at, None if ann is None else json.loads(ann))
                    for d, mt, size, at, ann in conn.execute(sql, params)]

        return await self._read(run)

    # -- locks -------------------------------------------------------------------------

    def _owner(self) -> str:
        # The holder's start time rides in the owner: a PID that was reused by
        # another process (pid_max wraps on a busy machine) is not the holder.
        return f'{self._proc}-{uuid.uuid4().hex[:8]}@{my_start()}'

    @asynccontextmanager
    async def lock(self, name: str, *, exclusive: bool, wait: bool
                   ) -> AsyncIterator[Lease | None]:
        lease = Lease(name, self._owner())

        def attempt(conn: sqlite3.Connection) -> bool:
            with _tx(conn):
                return take(conn, name, lease.owner, exclusive)

        while not await self._write(attempt):
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
        name, owner = lease.name, lease.owner

        def renew(conn: sqlite3.Connection) -> None:
            with _tx(conn):
                conn.execute('UPDATE locks SET expires_at = ? WHERE name = ? AND owner = ?',
                             [time.time() + LEASE_SECONDS, name, owner])
                if session_id is not None:
                    conn.execute('UPDATE uploads SET updated_at = ? WHERE id = ?',
                                 [self.clock(), session_id])

        async def renewing() -> None:
            while True:
                await asyncio.sleep(LEASE_SECONDS / 3)
                try:
                    await self._write(renew)
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
        def release(conn: sqlite3.Connection) -> None:
            with _tx(conn):
                drop(conn, lease.name, lease.owner)
                if session_id is not None:
                    # Idle time counts from the end of the last activity.
                    conn.execute('UPDATE uploads SET updated_at = ? WHERE id = ?',
                                 [self.clock(), session_id])

        # Even when the request was cancelled: a lock must not outlive its use (the
        # lease would free it later, but the session would look busy until then).
        release_task = asyncio.ensure_future(self._write(release))
        try:
            await asyncio.shield(release_task)
        except asyncio.CancelledError:
            await asyncio.wait([release_task])
            raise
        except StoreUnavailable:
            pass  # the lease runs out by itself
        lease.released = True

    # -- GC, fsck, operations ----------------------------------------------------------

    async def sweep(self, cutoff: float, *, unreachable: Unreachable | None,
                    dry_run: bool) -> Sweep:
        def run(conn: sqlite3.Connection) -> Sweep:
            result = Sweep()
            with _tx(conn, commit=not dry_run):
                if unreachable is not None:
                    for graph in _graphs(conn):
                        doomed = unreachable(graph, cutoff)
                        result.manifests += [(graph.repo, d) for d in doomed]
                        result.young_manifests += [
                            (graph.repo, d) for d in unreachable(graph, float('inf'))
                            if d not in doomed]
                    for repo, digest in result.manifests:
                        _delete_manifest(conn, repo, digest)
                unreferenced = [(r, d, t) for r, d, t in conn.execute(
                    'SELECT l.repo, l.digest, l.created_at FROM repo_blobs l WHERE '
                    'NOT EXISTS (SELECT 1 FROM manifest_refs m '
                    'WHERE m.repo = l.repo AND m.child = l.digest) ORDER BY l.created_at')]
                result.links = [(r, d) for r, d, t in unreferenced if t < cutoff]
                result.young_links = [(r, d) for r, d, t in unreferenced if t >= cutoff]
                conn.executemany('DELETE FROM repo_blobs WHERE repo = ? AND digest = ?',
                                 result.links)
                result.blobs = [(d, s) for d, s in conn.execute(
                    'SELECT b.digest, b.size FROM blobs b WHERE NOT EXISTS '
                    '(SELECT 1 FROM repo_blobs l WHERE l.digest = b.digest) '
                    'ORDER BY b.created_at')]
                conn.executemany('DELETE FROM blobs WHERE digest = ?',
                                 [(d,) for d, _ in result.blobs])
                result.repositories = [r[0] for r in conn.execute(
                    'SELECT name FROM repositories r WHERE '
                    'NOT EXISTS (SELECT 1 FROM tags t WHERE t.repo = r.name) AND '
                    'NOT EXISTS (SELECT 1 FROM manifests m WHERE m.repo = r.name) AND '
                    'NOT EXISTS (SELECT 1 FROM repo_blobs l WHERE l.repo = r.name) '
                    'ORDER BY name')]
                conn.executemany('DELETE FROM repositories WHERE name = ?',
                                 [(r,) for r in result.repositories])
            return result

        return await self._write(run)

    async def blob_sizes(self) -> dict[str, int]:
        def run(conn: sqlite3.Connection) -> dict[str, int]:
            return dict(conn.execute('SELECT digest, size FROM blobs'))

        return await self._read(run)

    async def manifests(self) -> AsyncIterator[StoredManifest]:
        def page(conn: sqlite3.Connection, after: tuple[str, str]
                 ) -> list[StoredManifest]:
            return [StoredManifest(*r) for r in conn.execute(
                'SELECT repo, digest, content FROM manifests WHERE (repo, digest) > '
                '(?, ?) ORDER BY repo, digest LIMIT 200', after)]

        after = ('', '')
        while True:
            batch = await self._read(page, after)
            for m in batch:
                yield m
            if len(batch) < 200:
                return
            after = (batch[-1].repo, batch[-1].digest)

    async def dangling_references(self) -> list[tuple[str, str, str]]:
        def run(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
            return list(conn.execute(
                'SELECT r.repo, r.digest, r.child FROM manifest_refs r WHERE NOT EXISTS '
                '(SELECT 1 FROM repo_blobs l WHERE l.repo = r.repo AND l.digest = r.child)'
                ' AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.repo = r.repo '
                'AND m.digest = r.child)'))

        return await self._read(run)

    async def forget_blob(self, digest: str) -> None:
        def run(conn: sqlite3.Connection) -> None:
            with _tx(conn):
                conn.execute('DELETE FROM repo_blobs WHERE digest = ?', [digest])
                conn.execute('DELETE FROM blobs WHERE digest = ?', [digest])

        await self._write(run)

    async def stats(self) -> StoreStats:
        def run(conn: sqlite3.Connection) -> StoreStats:
            def one(sql: str) -> int:
                return int(conn.execute(sql).fetchone()[0])

            return StoreStats(
                upload_sessions=one('SELECT COUNT(*) FROM uploads'),
                upload_bytes=one('SELECT COALESCE(SUM(size), 0) FROM uploads'),
                blob_bytes=one('SELECT COALESCE(SUM(size), 0) FROM blobs'),
                manifest_bytes=one('SELECT COALESCE(SUM(size), 0) FROM manifests'),
                repositories=one('SELECT COUNT(*) FROM repositories'),
                blobs=one('SELECT COUNT(*) FROM blobs'),
                manifests=one('SELECT COUNT(*) FROM manifests'),
                tags=one('SELECT COUNT(*) FROM tags'),
            )

        return await self._read(run)

    async def check(self) -> str:
        def run(conn: sqlite3.Connection) -> str:
            # Taking the write lock proves the file is writable and not wedged.
            conn.execute('BEGIN IMMEDIATE')
            conn.execute('ROLLBACK')
            return 'ok'

        try:
            return await self._write(run)
        except StoreUnavailable as ex:
            return f'database not writable: {ex.reason}'


# -- statements shared by several operations (called inside a pool thread) -------------


@contextmanager
def _tx(conn: sqlite3.Connection, *, commit: bool = True) -> Iterator[None]:
    """A write transaction holding SQLite's write lock from its first statement."""
    conn.execute('BEGIN IMMEDIATE')
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute('ROLLBACK')
        raise
    conn.execute('COMMIT' if commit else 'ROLLBACK')


def _repo_exists(conn: sqlite3.Connection, repo: str) -> bool:
    return conn.execute('SELECT 1 FROM repositories WHERE name = ?',
                        [repo]).fetchone() is not None


def _ensure_repo(conn: sqlite3.Connection, repo: str, now: float) -> None:
    conn.execute('INSERT OR IGNORE INTO repositories (name, created_at) VALUES (?, ?)',
                 [repo, now])


def _link(conn: sqlite3.Connection, repo: str, digest: str, size: int, now: float
          ) -> None:
    _ensure_repo(conn, repo, now)
    conn.execute('INSERT OR IGNORE INTO blobs (digest, size, created_at) VALUES (?, ?, ?)',
                 [digest, size, now])
    # A push or mount renews the link: GC's grace counts from the last one.
    conn.execute('INSERT INTO repo_blobs (repo, digest, created_at) VALUES (?, ?, ?) '
                 'ON CONFLICT (repo, digest) '
                 'DO UPDATE SET created_at = excluded.created_at', [repo, digest, now])


def _blob_size(conn: sqlite3.Connection, repo: str, digest: str) -> int | None:
    row = conn.execute(
        'SELECT b.size FROM repo_blobs r JOIN blobs b ON b.digest = r.digest '
        'WHERE r.repo = ? AND r.digest = ?', [repo, digest]).fetchone()
    return None if row is None else int(row[0])


def _get_upload(conn: sqlite3.Connection, session_id: str) -> Upload | None:
    row = conn.execute(f'SELECT {_UPLOAD_COLS} FROM uploads WHERE id = ?',
                       [session_id]).fetchone()
    return None if row is None else Upload(*row)


def _missing(conn: sqlite3.Connection, table: str, repo: str, wanted: list[str]
             ) -> list[str]:
    """Which of ``wanted`` have no row in ``table`` for ``repo``, in order. Queried
    in slices: SQLite caps the number of bound parameters."""
    have: set[str] = set()
    for i in range(0, len(wanted), 500):
        part = wanted[i:i + 500]
        have.update(r[0] for r in conn.execute(
            f'SELECT digest FROM {table} WHERE repo = ? AND digest IN '
            f'({",".join("?" * len(part))})', [repo, *part]))
    return [d for d in wanted if d not in have]


def _delete_manifest(conn: sqlite3.Connection, repo: str, digest: str) -> bool:
    """The manifest and every tag pointing at it (spec §Deleting)."""
    cur = conn.execute('DELETE FROM manifests WHERE repo = ? AND digest = ?',
                       [repo, digest])
    if cur.rowcount:
        conn.execute('DELETE FROM tags WHERE repo = ? AND digest = ?', [repo, digest])
        conn.execute('DELETE FROM manifest_refs WHERE repo = ? AND digest = ?',
                     [repo, digest])
    return cur.rowcount > 0


def _graphs(conn: sqlite3.Connection) -> Iterator[ManifestGraph]:
    graphs: dict[str, ManifestGraph] = {}
    for repo, digest, created, subject in conn.execute(
            'SELECT repo, digest, created_at, subject FROM manifests'):
        g = graphs.get(repo)
        if g is None:
            g = graphs[repo] = ManifestGraph(repo, {}, {}, {}, set())
        g.created[digest] = created
        if subject:
            g.subjects[digest] = subject
    for repo, digest, child in conn.execute(
            'SELECT repo, digest, child FROM manifest_refs'):
        if repo in graphs:
            graphs[repo].children.setdefault(digest, []).append(child)
    for repo, digest in conn.execute('SELECT repo, digest FROM tags'):
        if repo in graphs:
            graphs[repo].tagged.add(digest)
    yield from graphs.values()


__all__ = ['DB_FILE', 'SQLiteMetadataStore']
