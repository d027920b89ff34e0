"""The pull-through cache: upstream content served through own storage (issue 13).

HTTP-free, over the BlobStore/MetadataStore interfaces; it answers with the same
records as own content (ManifestRecord; a blob's size then its bytes), so the API
resources treat both alike.

- Manifests are fetched whole (capped), verified by the upstream client, stored byte
  for byte under the route's cache name as *sparse* manifests: their layers are not
  required, so a manifest answer never waits for layers.
- Tags: served from the cache while younger than ``tag_ttl``; then one HEAD; an
  unchanged digest only renews ``validated_at`` (no body, no rate limit spent); a new
  one is fetched by digest and the tag moved. When the upstream fails, a tag
  validated within ``tag_ttl + max_stale`` is served with a ``Warning`` (spec
  §Warnings); past that the upstream's error is the answer.
- Blobs: one download per (cache name, digest) in this process, run by a task the
  cache owns (a client hanging up does not stop it). It writes a spool as bytes
  arrive; every response tails the spool from its own offset and waits for more when
  it catches up (so ``Range`` works during a fetch). The upstream client's
  VerifyingStream holds the last chunk back until digest and size check out, so no
  reader sees a bad blob as complete; on failure the spool goes and every reader
  raises, which aborts its response short of ``Content-Length``. The spool is
  committed (durably, then atomically) and linked to the cache name only once
  verified.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client import Counter, Gauge

from oci_ref.errors import ErrorCode, RegistryError, store_unavailable
from oci_ref.manifest import parse_manifest
from oci_ref.reference import (
    TAG_RULE,
    Digest,
    digest_problem,
    is_digest_reference,
    is_valid_tag,
)
from oci_ref.registry import PARSE_INLINE_MAX, Registry
from oci_ref.storage.interfaces import ManifestRecord, SessionMissing, StoreUnavailable
from oci_ref.uploads import GC_LOCK
from oci_ref.upstream.client import Manifest, Referrers, TagsPage
from oci_ref.upstream.errors import UpstreamError, UpstreamNotFound
from oci_ref.upstream.pool import Upstreams
from oci_ref.upstream.routing import Route

log = logging.getLogger('oci_ref.cache')
T = TypeVar('T')

# Bytes gathered before one spool write (one thread hop); the first chunk is
# written at once so that time to first byte stays the upstream's.
SPOOL_BATCH = 256 * 1024
# Referrers served from the cache when the upstream fails: one page, this many.
REFERRERS_MAX = 1000
INDEX = 'application/vnd.oci.image.index.v1+json'

# Across worker processes: a download's owner reports progress this often, and a
# claim whose heartbeat is older than CLAIM_STALE is taken over (its owner died).
REPORT_EVERY = 0.05
CLAIM_STALE = 30.0

EVENTS = Counter('oci_ref_upstream_cache_events',
                 'Pull-through cache: hit, miss, stale (served past tag_ttl because '
                 'the upstream failed), revalidated, upstream_error',
                 ['upstream', 'event'])
FETCHED = Counter('oci_ref_upstream_fetched_bytes', 'Blob bytes fetched from upstreams',
                  ['upstream'])
IN_FLIGHT = Gauge('oci_ref_upstream_fetches_in_flight', 'Blob downloads in progress',
                  ['upstream'], multiprocess_mode='livesum')


@dataclass(frozen=True, slots=True)
class Served:
    """A manifest answer; ``warning`` (spec §Warnings) when served stale."""

    record: ManifestRecord
    warning: str | None = None


class FetchFailed(Exception):
    """The download a response was tailing failed: the response must be cut off."""


class Fetch:
    """One blob download into a spool, shared by every response that wants it."""

    def __init__(self, upstream: str, cache_name: str, digest: Digest):
        self.upstream = upstream
        self.cache_name = cache_name
        self.digest = digest
        self.spool = f'tmp-cache-{uuid.uuid4()}'
        self.size: int | None = None
        self.written = 0
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


class PullThrough:
    def __init__(self, registry: Registry, upstreams: Upstreams, *,
                 clock: Callable[[], float] = time.time):
        self.registry = registry
        self.blobs = registry.blobs
        self.meta = registry.meta
        self.upstreams = upstreams
        self.clock = clock
        self._fetches: dict[tuple[str, str], Fetch] = {}
        self._once: dict[Hashable, asyncio.Future[Any]] = {}
        # This worker's name on download claims (one per process and cache).
        self.owner = f'{os.getpid()}-{uuid.uuid4().hex[:12]}'

    async def aclose(self) -> None:
        for fetch in list(self._fetches.values()):
            if fetch.task is not None:
                fetch.task.cancel()
        await self.upstreams.aclose()

    # -- single flight ------------------------------------------------------------------

    async def _single(self, key: Hashable, make: Callable[[], Awaitable[T]]) -> T:
        """Run ``make`` once for every concurrent caller with the same ``key``."""
        pending = self._once.get(key)
        if pending is None:
            pending = asyncio.ensure_future(make())
            self._once[key] = pending
            pending.add_done_callback(lambda _: self._once.pop(key, None))
        # shield: one caller hanging up does not cancel the others' answer.
        return await asyncio.shield(pending)

    # -- manifests (end-3) ----------------------------------------------------------------

    async def manifest(self, route: Route, reference: str) -> Served:
        cache = _cache_name(route)
        upstream = _upstream(route)
        if is_digest_reference(reference):
            problem = digest_problem(reference)
            if problem is not None:
                raise RegistryError(ErrorCode.MANIFEST_UNKNOWN,
                                    detail={'reference': reference[:200], 'rule': problem})
            record = await self.meta.get_manifest(cache, reference)
            if record is not None:
                EVENTS.labels(upstream, 'hit').inc()
                return Served(record)
            return Served(await self._single(
                ('manifest', cache, reference),
                lambda: self._fetch_manifest(route, reference, ())))
        if not is_valid_tag(reference):
            raise RegistryError(ErrorCode.MANIFEST_UNKNOWN,
                                detail={'reference': reference[:200], **TAG_RULE})
        known = await self.meta.cache_tag(cache, reference)
        ttl = route.upstream.tag_ttl if route.upstream is not None else 0
        if known is not None and self.clock() - known.validated_at < ttl:
            record = await self.meta.get_manifest(cache, known.digest)
            if record is not None:
                EVENTS.labels(upstream, 'hit').inc()
                return Served(record)
        return await self._single(('tag', cache, reference),
                                  lambda: self._revalidate(route, reference))

    async def _revalidate(self, route: Route, tag: str) -> Served:
        cache, upstream = _cache_name(route), route.upstream
        assert upstream is not None and route.repository is not None
        client = self.upstreams.client(upstream)
        now = self.clock()
        known = await self.meta.cache_tag(cache, tag)
        try:
            head = await client.head_manifest(route.repository, tag)
            record = await self.meta.get_manifest(cache, head.digest)
            if record is None:
                record = await self._fetch_manifest(route, head.digest, (tag,))
            elif known is None or known.digest != head.digest:
                await self._store(cache, Manifest(record.content, record.media_type,
                                                  record.digest), (tag,))
                EVENTS.labels(upstream.name, 'miss').inc()
            else:
                EVENTS.labels(upstream.name, 'revalidated').inc()
            await self.meta.set_cache_tag(cache, tag, head.digest, now)
            return Served(record)
        except UpstreamNotFound as ex:
            raise ex.to_registry_error('manifest') from None
        except UpstreamError as ex:
            EVENTS.labels(upstream.name, 'upstream_error').inc()
            age = now - known.validated_at if known is not None else None
            if known is not None and age is not None and \
                    age < upstream.tag_ttl + upstream.max_stale:
                record = await self.meta.get_manifest(cache, known.digest)
                if record is not None:
                    EVENTS.labels(upstream.name, 'stale').inc()
                    log.warning('serving %s:%s stale (validated %ds ago): %s', cache,
                                tag, int(age), ex)
                    return Served(record, f'upstream {upstream.name} failed '
                                          f'({ex.reason}); serving the tag as last '
                                          f'validated {int(age)}s ago')
            raise ex.to_registry_error('manifest') from None

    async def _fetch_manifest(self, route: Route, digest: str, tags: tuple[str, ...]
                              ) -> ManifestRecord:
        upstream = _upstream(route)
        assert route.upstream is not None and route.repository is not None
        try:
            m = await self.upstreams.client(route.upstream).get_manifest(
                route.repository, digest)
        except UpstreamError as ex:
            if not isinstance(ex, UpstreamNotFound):
                EVENTS.labels(upstream, 'upstream_error').inc()
            raise ex.to_registry_error('manifest') from None
        EVENTS.labels(upstream, 'miss').inc()
        await self._store(_cache_name(route), m, tags)
        return ManifestRecord(m.digest, m.media_type, m.size, m.body)

    async def _store(self, cache: str, m: Manifest, tags: tuple[str, ...]) -> None:
        """Byte for byte, sparse (its layers come when asked for). A manifest our
        validator refuses is still served as the upstream sent it, its references
        unrecorded."""
        parsed = None
        try:
            if m.size > PARSE_INLINE_MAX:
                parsed = await asyncio.to_thread(parse_manifest, m.body, m.media_type)
            else:
                parsed = parse_manifest(m.body, m.media_type)
        except RegistryError as ex:
            log.info('cached manifest %s of %s does not validate: %s', m.digest, cache,
                     ex)
        media_type = m.media_type or (parsed.media_type if parsed else '') or \
            'application/octet-stream'
        await self.meta.put_manifest(
            cache, m.digest, media_type, m.body,
            subject=parsed.subject.digest if parsed and parsed.subject else None,
            artifact_type=parsed.artifact_type if parsed else None,
            annotations=parsed.annotations if parsed else None,
            blobs=[d.digest for d in parsed.required_blobs()] if parsed else [],
            children=[d.digest for d in parsed.manifests] if parsed else [],
            tags=list(tags), sparse=True)

    # -- blobs (end-2) ------------------------------------------------------------------

    async def blob_size(self, route: Route, digest: str
                        ) -> tuple[Digest, int, Fetch | None]:
        """The blob's size, and the download to tail when it is not cached yet."""
        d = Digest.parse(digest)
        cache = _cache_name(route)
        size = await self.meta.blob_size(cache, str(d))
        if size is not None:
            EVENTS.labels(_upstream(route), 'hit').inc()
            return d, size, None
        key = (cache, str(d))
        fetch = self._fetches.get(key)
        if fetch is None:
            fetch = Fetch(_upstream(route), cache, d)
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
                        EVENTS.labels(_upstream(route), 'hit').inc()
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
                EVENTS.labels(_upstream(route), 'miss').inc()
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
            if fetch.committed:
                async for chunk in await self.registry.read_blob(fetch.digest, pos,
                                                                 end - pos):
                    pos += len(chunk)
                    yield chunk
                return
            available = min(fetch.written, end)
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
        created = False
        try:
            await self.blobs.create_spool(fetch.spool)
            created = True
            async with client.blob(route.repository, str(fetch.digest)) as stream:
                fetch.size = stream.size
                fetch.ready.set()
                batch: list[bytes] = []
                batched = 0
                async for chunk in stream:
                    if batch and (batched >= SPOOL_BATCH or fetch.written == 0):
                        await self._spool(fetch, batch)
                        batch, batched = [], 0
                    batch.append(chunk)
                    batched += len(chunk)
                # Verified: VerifyingStream raised otherwise, before the last chunk.
                # The last bytes are published only once committed and linked: a
                # client that has the whole blob finds it cached.
                last = await self._spool(fetch, batch, publish=False) if batch else 0
            size = fetch.written + last
            async with self.meta.lock(GC_LOCK, exclusive=False, wait=True) as gc:
                await self.blobs.commit(fetch.spool, fetch.digest)
                created = False
                await self.meta.link_blob(fetch.cache_name, str(fetch.digest), size,
                                          release=[] if gc is None else [gc])
            fetch.size = fetch.written = size
            fetch.committed = True
        except BaseException as ex:
            fetch.error = ex
            if isinstance(ex, UpstreamError):
                EVENTS.labels(fetch.upstream, 'upstream_error').inc()
                log.warning('pull-through of %s@%s failed: %s', fetch.cache_name,
                            fetch.digest, ex)
            elif not isinstance(ex, asyncio.CancelledError):
                log.exception('pull-through of %s@%s failed', fetch.cache_name,
                              fetch.digest)
            if created:
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

    async def _spool(self, fetch: Fetch, batch: list[bytes], *, publish: bool = True
                     ) -> int:
        n = await self.blobs.append(fetch.spool, fetch.written, _each(batch), [])
        FETCHED.labels(fetch.upstream).inc(n)
        if publish:
            fetch.written += n
            fetch.notify()
        return n

    # -- tags (end-8) and referrers (end-12): passed through ---------------------------

    async def tags(self, route: Route, n: int | None, last: str | None) -> TagsPage:
        assert route.upstream is not None and route.repository is not None
        try:
            return await self.upstreams.client(route.upstream).list_tags(
                route.repository, n, last)
        except UpstreamError as ex:
            EVENTS.labels(route.upstream.name, 'upstream_error').inc()
            raise ex.to_registry_error('tags') from None

    async def referrers(self, route: Route, digest: str, artifact_type: str | None
                        ) -> tuple[Referrers, str | None]:
        """The upstream's answer; when the upstream fails, the referrers the cache
        holds (pulled through or prefetched) with a warning saying so."""
        assert route.upstream is not None and route.repository is not None
        d = Digest.parse(digest)
        try:
            return await self.upstreams.client(route.upstream).referrers(
                route.repository, digest, artifact_type), None
        except UpstreamNotFound as ex:
            raise ex.to_registry_error('referrers') from None
        except UpstreamError as ex:
            EVENTS.labels(route.upstream.name, 'upstream_error').inc()
            page = await self.registry.referrers(_cache_name(route), str(d),
                                                 artifact_type, None, REFERRERS_MAX)
            if not page.items:
                raise ex.to_registry_error('referrers') from None
            EVENTS.labels(route.upstream.name, 'stale').inc()
            log.warning('serving cached referrers of %s@%s: %s', _cache_name(route),
                        d, ex)
            manifests = [{k: v for k, v in (
                ('mediaType', r.media_type), ('digest', r.digest), ('size', r.size),
                ('artifactType', r.artifact_type), ('annotations', r.annotations))
                if v is not None} for r in page.items]
            body = json.dumps({'schemaVersion': 2, 'mediaType': INDEX,
                               'manifests': manifests}).encode()
            return (Referrers(body, INDEX, 'cache', artifact_type is not None),
                    f'upstream {route.upstream.name} failed ({ex.reason}); serving '
                    'the referrers this cache holds')


async def _each(batch: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in batch:
        yield chunk


def _cache_name(route: Route) -> str:
    name = route.cache_name
    assert name is not None, 'a cache route names an upstream'
    return name


def _upstream(route: Route) -> str:
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


UNKNOWN_OWN = frozenset({ErrorCode.MANIFEST_UNKNOWN, ErrorCode.NAME_UNKNOWN,
                         ErrorCode.BLOB_UNKNOWN})
