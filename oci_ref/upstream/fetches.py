"""Blob downloads of the pull-through cache (issue 13): one per (cache name, digest),
shared by every response that wants the blob, across worker processes too.

The owner of a download keeps the bytes it received last in memory (a bounded
window) and writes them to a spool in large batches in a pool thread while it
receives the next ones. Every response of its worker is served from that window as
the bytes arrive; one that fell behind the window reads the spool from its own
offset, and one that caught up waits for more (so ``Range`` works during a
download). The upstream client's VerifyingStream holds the last chunk back until
digest and size check out, and the last bytes are published only once the blob is
committed (durably, then atomically) and linked, so no reader sees a bad blob as
complete and a reader that has every byte finds the blob cached. On failure the
spool goes and every reader raises FetchFailed, which cuts its response short.

Across workers the download is claimed in the metadata store (``claim_fetch``): the
owner reports the bytes on its spool and a heartbeat there, the others poll it and
tail the same spool, and a claim whose owner stopped is taken over.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from bisect import bisect_right
from collections.abc import AsyncIterator, Callable

from oci_ref.errors import ErrorCode, RegistryError, store_unavailable
from oci_ref.reference import Digest
from oci_ref.registry import Registry
from oci_ref.storage.interfaces import SessionMissing, StoreUnavailable
from oci_ref.uploads import GC_LOCK
from oci_ref.upstream.config import Upstream
from oci_ref.upstream.errors import FetchFailed, UpstreamError
from oci_ref.upstream.pool import Upstreams
from oci_ref.upstream.routing import Route
from oci_ref.upstream.stats import EVENTS, FETCHED, IN_FLIGHT

log = logging.getLogger('oci_ref.cache')

# One spool write (in a pool thread) takes everything received while the one
# before it ran, so writes grow with the stream's speed; above this much waiting
# for the disk the download stops receiving until the spool caught up. The first
# bytes are written at once (another worker's or replica's first byte); a store
# with a chunk minimum (S3: 5 MiB) gets writes that large after them, so that its
# readable spool joins them at commit by server-side copies (s3_spools.py).
SPOOL_PENDING_MAX = 2 * 1024 * 1024
# Received bytes kept in memory for the worker's readers, beyond those not yet on
# the spool: a reader up to this far behind is served without reading the spool.
# So a download holds at most about KEEP + 2 x SPOOL_PENDING_MAX in memory (on S3
# KEEP + 4 x 5 MiB: its writes are at least that large).
KEEP = 4 * 1024 * 1024
# The most one response send takes from the window (joined): fewer, larger sends.
SEND_MAX = 1024 * 1024
# Across worker processes: a download's owner reports progress this often, and a
# claim whose heartbeat is older than CLAIM_STALE is taken over (its owner died).
REPORT_EVERY = 0.05
CLAIM_STALE = 30.0


class Fetch:
    """One blob download into a spool, shared by every response that wants it."""

    def __init__(self, upstream: str, cache_name: str, digest: Digest):
        self.upstream = upstream
        self.cache_name = cache_name
        self.digest = digest
        self.spool = f'tmp-cache-{uuid.uuid4()}'
        self.size: int | None = None
        # Bytes readable from the spool (what other workers are told), and bytes
        # readers may have (the held-back last bytes excepted); the owner's own
        # readers take the latter from ``_chunks`` while they are in memory.
        self.written = 0
        self.published = 0
        self.spooled = 0
        self._chunks: list[bytes] = []
        self._offsets: list[int] = []
        self._head = 0  # index of the first chunk still held
        self.committed = False
        self.error: BaseException | None = None
        self.ready = asyncio.Event()     # size known (or failed)
        self.finished = asyncio.Event()  # committed or failed
        self._changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    @property
    def key(self) -> str:
        """The claim's key in the metadata store."""
        return f'{self.cache_name}@{self.digest}'

    def notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    @property
    def held_from(self) -> int | None:
        """The offset of the first byte held in memory, None when none is."""
        return self._offsets[self._head] if self._head < len(self._chunks) else None

    def publish(self, chunk: bytes) -> None:
        """Hand ``chunk`` (the next bytes) to the readers of this worker."""
        self._offsets.append(self.published)
        self._chunks.append(chunk)
        self.published += len(chunk)
        self.written = min(self.spooled, self.published)
        self._trim()
        self.notify()

    def spooled_to(self, size: int) -> None:
        self.spooled = size
        self.written = min(self.spooled, self.published)
        self._trim()

    def _trim(self) -> None:
        # Only bytes on the spool are dropped, so a reader behind the window
        # finds them there (held_from <= written).
        keep_from = min(self.written, self.published - KEEP)
        head, chunks, offsets = self._head, self._chunks, self._offsets
        while head < len(chunks) and offsets[head] + len(chunks[head]) <= keep_from:
            chunks[head] = b''
            head += 1
        if head > 64 and head * 2 > len(chunks):
            del chunks[:head], offsets[:head]
            head = 0
        self._head = head

    def take(self, pos: int, end: int) -> bytes:
        """Bytes ``pos`` .. at most ``end`` from memory (``held_from <= pos <
        published``), joined up to SEND_MAX."""
        i = bisect_right(self._offsets, pos, self._head) - 1
        first = self._chunks[i]
        skip = pos - self._offsets[i]
        end = min(end, self.published, pos + SEND_MAX)
        if skip == 0 and len(first) == end - pos:
            return first
        parts: list[bytes | memoryview] = []
        while pos < end:
            chunk = memoryview(self._chunks[i])[skip:skip + end - pos]
            parts.append(chunk)
            pos += len(chunk)
            i, skip = i + 1, 0
        return b''.join(parts)


class BlobFetches:
    """The blob downloads of one worker, and its view of other workers' ones."""

    def __init__(self, registry: Registry, upstreams: Upstreams,
                 clock: Callable[[], float]):
        self.registry = registry
        self.blobs = registry.blobs
        self.meta = registry.meta
        self.upstreams = upstreams
        self.clock = clock
        self._fetches: dict[tuple[str, str], Fetch] = {}
        # This worker's name on download claims (one per process and cache).
        self.owner = f'{os.getpid()}-{uuid.uuid4().hex[:12]}'
        # Told of each blob committed into an upstream's cache (eviction).
        self.on_commit: Callable[[Upstream], None] | None = None

    def cancel(self) -> None:
        for fetch in list(self._fetches.values()):
            if fetch.task is not None:
                fetch.task.cancel()

    async def blob_size(self, route: Route, digest: str
                        ) -> tuple[Digest, int, Fetch | None]:
        """The blob's size, and the download to tail when it is not cached yet."""
        d = Digest.parse(digest)
        cache = cache_name_of(route)
        size = await self.meta.blob_size(cache, str(d))
        if size is not None:
            EVENTS.labels(upstream_of(route), 'hit').inc()
            return d, size, None
        key = (cache, str(d))
        fetch = self._fetches.get(key)
        if fetch is None:
            fetch = Fetch(upstream_of(route), cache, d)
            self._fetches[key] = fetch
            try:
                now = self.clock()
                claim = await self.meta.claim_fetch(fetch.key, self.owner, fetch.spool,
                                                    now, now - CLAIM_STALE)
                if claim.owner == self.owner:
                    # A download that ended between our look and our claim.
                    size = await self.meta.blob_size(cache, str(d))
                    if size is not None:
                        await self.meta.end_fetch(fetch.key, self.owner)
                        self._fetches.pop(key, None)
                        # Whoever joined meanwhile reads the committed blob.
                        fetch.size = fetch.written = size
                        fetch.committed = True
                        fetch.ready.set()
                        fetch.finished.set()
                        fetch.notify()
                        EVENTS.labels(upstream_of(route), 'hit').inc()
                        return d, size, None
            except BaseException as ex:
                self._fetches.pop(key, None)
                fetch.error = ex
                fetch.ready.set()
                fetch.finished.set()
                fetch.notify()
                raise
            loop = asyncio.get_running_loop()
            if claim.owner == self.owner:
                EVENTS.labels(upstream_of(route), 'miss').inc()
                fetch.task = loop.create_task(self._download(route, fetch, key))
            else:
                # Another worker is downloading it: tail its spool.
                fetch.spool = claim.spool
                fetch.task = loop.create_task(self._follow(fetch, key, claim.owner))
        await fetch.ready.wait()
        if fetch.error is not None:
            raise _as_registry_error(fetch.error)
        if fetch.size is None:
            # No Content-Length upstream: wait for the verified whole.
            await fetch.finished.wait()
            if fetch.error is not None:
                raise _as_registry_error(fetch.error)
        assert fetch.size is not None
        return d, fetch.size, fetch

    async def read_blob(self, d: Digest, fetch: Fetch | None, start: int, length: int
                        ) -> AsyncIterator[bytes]:
        if fetch is None or fetch.committed:
            return await self.registry.read_blob(d, start, length)
        return self._tail(fetch, start, start + length)

    async def _tail(self, fetch: Fetch, pos: int, end: int) -> AsyncIterator[bytes]:
        while pos < end:
            changed = fetch._changed
            if fetch.error is not None:
                raise FetchFailed(str(fetch.error))
            held_from = fetch.held_from
            if held_from is not None and held_from <= pos < fetch.published:
                # As received: no spool read, no thread hop.
                chunk = fetch.take(pos, end)
                pos += len(chunk)
                yield chunk
                continue
            if fetch.committed:
                async for chunk in await self.registry.read_blob(fetch.digest, pos,
                                                                 end - pos):
                    pos += len(chunk)
                    yield chunk
                return
            # Behind the window (or another worker's download): from the spool.
            available = min(fetch.written, end)
            if held_from is not None:
                available = min(available, held_from)
            if available > pos:
                try:
                    async for chunk in await self.blobs.spool_reader(
                            fetch.spool, pos, available - pos):
                        pos += len(chunk)
                        yield chunk
                except SessionMissing:
                    # Committed (renamed) or failed meanwhile: ask again.
                    await fetch.finished.wait()
                continue
            await changed.wait()

    async def _follow(self, fetch: Fetch, key: tuple[str, str], owner: str) -> None:
        """Mirror another worker's download of ``fetch`` from its claim."""
        try:
            while True:
                claim = await self.meta.get_fetch(fetch.key)
                if claim is None or claim.owner != owner:
                    size = await self.meta.blob_size(fetch.cache_name, str(fetch.digest))
                    if size is None:
                        raise FetchFailed(f'the download of {fetch.digest} from '
                                          f'{fetch.upstream} failed in another worker')
                    fetch.size = fetch.written = size
                    fetch.committed = True
                    return
                if claim.heartbeat < self.clock() - CLAIM_STALE:
                    raise FetchFailed(f'the worker downloading {fetch.digest} from '
                                      f'{fetch.upstream} stopped')
                if claim.size is not None and not fetch.ready.is_set():
                    fetch.size = claim.size
                    fetch.ready.set()
                if claim.written > fetch.written:
                    fetch.written = claim.written
                    fetch.notify()
                await asyncio.sleep(REPORT_EVERY)  # polling: no event crosses workers
        except BaseException as ex:
            fetch.error = ex
            if isinstance(ex, asyncio.CancelledError):
                raise
        finally:
            self._fetches.pop(key, None)
            fetch.ready.set()
            fetch.finished.set()
            fetch.notify()

    async def _report(self, fetch: Fetch) -> None:
        """The owner's side of the claim: progress and heartbeat for other workers."""
        reported: tuple[int, int | None] = (-1, None)
        last = 0.0
        while True:
            now = self.clock()
            state: tuple[int, int | None] = (
                fetch.written, fetch.size if fetch.ready.is_set() else None)
            if state != reported or now - last > 1.0:
                if not await self.meta.update_fetch(fetch.key, self.owner, state[0],
                                                    state[1], now):
                    return
                reported, last = state, now
            await asyncio.sleep(REPORT_EVERY)

    async def _download(self, route: Route, fetch: Fetch, key: tuple[str, str]) -> None:
        reporter = asyncio.get_running_loop().create_task(self._report(fetch))
        try:
            await self._fetch_blob(route, fetch, key)
        finally:
            reporter.cancel()
            try:
                await self.meta.end_fetch(fetch.key, self.owner)
            except Exception:
                log.exception('could not end the download claim of %s', fetch.key)

    async def _fetch_blob(self, route: Route, fetch: Fetch, key: tuple[str, str]
                          ) -> None:
        assert route.upstream is not None and route.repository is not None
        client = self.upstreams.client(route.upstream)
        IN_FLIGHT.labels(fetch.upstream).inc()
        loop = asyncio.get_running_loop()
        # The spool is created while the upstream answers: not before the first byte.
        # Readable: every response, on any worker or replica, may tail it.
        creating = loop.create_task(self.blobs.create_spool(fetch.spool, readable=True))
        spooler = _Spooler(self, fetch)
        committed = False
        try:
            async with client.blob(route.repository, str(fetch.digest)) as stream:
                fetch.size = stream.size
                fetch.ready.set()
                await creating
                held: bytes | None = None
                received = 0
                async for chunk in stream:
                    received += len(chunk)
                    if held is not None:
                        fetch.publish(held)
                        held = None
                    if fetch.size is not None and received < fetch.size:
                        fetch.publish(chunk)  # not the last: the readers have it now
                    else:
                        # Maybe the last: published once verified and committed.
                        held = chunk
                    await spooler.add(chunk)
                # Verified: VerifyingStream raised otherwise, before the last chunk.
                await spooler.flush()
            size = received
            async with self.meta.lock(GC_LOCK, exclusive=False, wait=True) as gc:
                await self.blobs.commit(fetch.spool, fetch.digest)
                committed = True
                await self.meta.link_blob(fetch.cache_name, str(fetch.digest), size,
                                          release=[] if gc is None else [gc])
            # The last bytes only now: a client that has the whole blob finds it
            # cached.
            if held is not None:
                fetch.publish(held)
            fetch.size = fetch.written = fetch.spooled = size
            fetch.committed = True
            if self.on_commit is not None:
                self.on_commit(route.upstream)
        except BaseException as ex:
            fetch.error = ex
            if isinstance(ex, UpstreamError):
                EVENTS.labels(fetch.upstream, 'upstream_error').inc()
                log.warning('pull-through of %s@%s failed: %s', fetch.cache_name,
                            fetch.digest, ex)
            elif not isinstance(ex, asyncio.CancelledError):
                log.exception('pull-through of %s@%s failed', fetch.cache_name,
                              fetch.digest)
            # No thread may still write the spool when it goes (_run waits too).
            await spooler.stop()
            if not creating.done():
                await asyncio.wait([creating])
            if not creating.cancelled():
                creating.exception()  # retrieved: the first failure is the one raised
            # A creation cancelled midway may have made the file: discard it too.
            if not committed and (creating.cancelled() or creating.exception() is None):
                try:
                    await self.blobs.discard(fetch.spool)
                except Exception:
                    log.exception('could not remove spool %s', fetch.spool)
            if isinstance(ex, asyncio.CancelledError):
                raise
        finally:
            IN_FLIGHT.labels(fetch.upstream).dec()
            self._fetches.pop(key, None)
            fetch.ready.set()
            fetch.finished.set()
            fetch.notify()

    async def _spool(self, fetch: Fetch, batch: list[bytes]) -> None:
        n = await self.blobs.append(fetch.spool, fetch.spooled, _each(batch), [])
        FETCHED.labels(fetch.upstream).inc(n)
        fetch.spooled_to(fetch.spooled + n)


class _Spooler:
    """Writes a download's bytes to its spool in a pool thread while the loop
    receives more: one write at a time, each taking all that arrived during the
    one before, so that a stalled upstream leaves nothing unwritten (other workers
    read the spool) and a fast one gets large writes."""

    def __init__(self, fetches: BlobFetches, fetch: Fetch):
        self.fetches = fetches
        self.fetch = fetch
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.task: asyncio.Task[None] | None = None
        # After the first write, none smaller than the store's chunk minimum.
        self.min_batch = fetches.blobs.chunk_min_length
        self.limit = max(SPOOL_PENDING_MAX, 2 * self.min_batch)
        self.started = False

    def _due(self) -> bool:
        return bool(self.pending) and (
            not self.started or self.pending_bytes >= self.min_batch)

    async def add(self, chunk: bytes) -> None:
        self.pending.append(chunk)
        self.pending_bytes += len(chunk)
        if self.task is not None and self.task.done():
            task, self.task = self.task, None
            await task  # raises its failure
        if self.task is None:
            if self._due():
                self.task = asyncio.get_running_loop().create_task(self._drain())
        elif self.pending_bytes >= self.limit:
            # The store is behind: receive no more until it caught up.
            task, self.task = self.task, None
            await task

    async def _drain(self, *, last: bool = False) -> None:
        while self.pending and (last or self._due()):
            self.started = True
            batch, self.pending, self.pending_bytes = self.pending, [], 0
            await self.fetches._spool(self.fetch, batch)

    async def flush(self) -> None:
        if self.task is not None:
            task, self.task = self.task, None
            await task
        await self._drain(last=True)

    async def stop(self) -> None:
        """After a failure: no thread may still write the spool when it goes
        (FilesystemBlobStore._run waits for its thread even when cancelled)."""
        if self.task is not None:
            if not self.task.done():
                await asyncio.wait([self.task])
            if not self.task.cancelled():
                self.task.exception()  # retrieved: the first failure is raised


async def _each(batch: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in batch:
        yield chunk


def cache_name_of(route: Route) -> str:
    name = route.cache_name
    assert name is not None, 'a cache route names an upstream'
    return name


def upstream_of(route: Route) -> str:
    assert route.upstream is not None
    return route.upstream.name


def _as_registry_error(ex: BaseException) -> RegistryError:
    if isinstance(ex, UpstreamError):
        return ex.to_registry_error('blob')
    if isinstance(ex, RegistryError):
        return ex
    if isinstance(ex, StoreUnavailable):
        return store_unavailable(ex.store, ex.reason)
    return RegistryError(ErrorCode.BLOB_UNKNOWN, 'the pull-through download failed',
                         detail={'reason': type(ex).__name__}, status=502)
