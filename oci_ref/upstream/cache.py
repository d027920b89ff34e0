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
- Blobs: one download per (cache name, digest), streamed to every response as it is
  written (oci_ref/upstream/fetches.py), run by a task the cache owns (a client
  hanging up does not stop it).
- One upstream request per manifest and tag validation across every worker: within
  a worker concurrent askers share one task (``_single``); across workers the task
  runs under a metadata-store lock named after it, and a worker that waited for the
  lock first looks whether the holder already did the work (``_flight``).
- Size cap (``cache_max_bytes``): each served manifest's use is recorded
  coarsely, and each fetch that commits asks for a check; least-recently-used
  images go (oci_ref/upstream/evict.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from oci_ref.errors import ErrorCode, RegistryError
from oci_ref.manifest import parse_manifest
from oci_ref.reference import (
    TAG_RULE,
    Digest,
    digest_problem,
    is_digest_reference,
    is_valid_tag,
)
from oci_ref.registry import PARSE_INLINE_MAX, Registry
from oci_ref.storage.interfaces import CacheTag, ManifestRecord
from oci_ref.upstream.client import Manifest, Referrers, TagsPage
from oci_ref.upstream.errors import FetchFailed, UpstreamError, UpstreamNotFound
from oci_ref.upstream.evict import Evictor
from oci_ref.upstream.fetches import (
    BlobFetches,
    Fetch,
    cache_name_of,
    upstream_of,
)
from oci_ref.upstream.pool import Upstreams
from oci_ref.upstream.routing import Route
from oci_ref.upstream.stats import EVENTS, WAITING

log = logging.getLogger('oci_ref.cache')
T = TypeVar('T')

# Referrers served from the cache when the upstream fails: one page, this many.
REFERRERS_MAX = 1000
INDEX = 'application/vnd.oci.image.index.v1+json'


@dataclass(frozen=True, slots=True)
class Served:
    """A manifest answer; ``warning`` (spec §Warnings) when served stale."""

    record: ManifestRecord
    warning: str | None = None


class PullThrough:
    def __init__(self, registry: Registry, upstreams: Upstreams, *,
                 clock: Callable[[], float] = time.time):
        self.registry = registry
        self.blobs = registry.blobs
        self.meta = registry.meta
        self.upstreams = upstreams
        self.clock = clock
        self.fetches = BlobFetches(registry, upstreams, clock)
        # cache_max_bytes (evict.py): checked after each fetch commits.
        self.evictor = Evictor(registry, upstreams.upstreams, clock)
        self.fetches.on_commit = self.evictor.soon
        self._once: dict[Hashable, asyncio.Future[Any]] = {}
        self._hits: dict[str, Any] = {}

    async def aclose(self) -> None:
        self.fetches.cancel()
        await self.evictor.aclose()
        await self.upstreams.aclose()

    # -- blobs (end-2): see fetches.py ----------------------------------------------------

    async def blob_size(self, route: Route, digest: str
                        ) -> tuple[Digest, int, Fetch | None]:
        """The blob's size, and the download to tail when it is not cached yet."""
        return await self.fetches.blob_size(route, digest)

    async def read_blob(self, d: Digest, fetch: Fetch | None, start: int, length: int
                        ) -> AsyncIterator[bytes]:
        return await self.fetches.read_blob(d, fetch, start, length)

    def _hit(self, upstream: str) -> None:
        # labels() validates and locks on every call; a hit is the cache's hot path.
        counter = self._hits.get(upstream)
        if counter is None:
            counter = self._hits[upstream] = EVENTS.labels(upstream, 'hit')
        counter.inc()

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

    @asynccontextmanager
    async def _flight(self, name: str, upstream: str) -> AsyncIterator[bool]:
        """Hold the cross-worker lock ``name``; yields whether another worker held it
        first (then the caller looks again before asking the upstream)."""
        async with self.meta.lock(name, exclusive=True, wait=False) as lease:
            if lease is not None:
                yield False
                return
        gauge = WAITING.labels(upstream)
        gauge.inc()
        waiting = True
        try:
            async with self.meta.lock(name, exclusive=True, wait=True):
                gauge.dec()
                waiting = False
                yield True
        finally:
            if waiting:
                gauge.dec()

    # -- manifests (end-3) ----------------------------------------------------------------

    async def manifest(self, route: Route, reference: str) -> Served:
        cache = cache_name_of(route)
        upstream = upstream_of(route)
        if is_digest_reference(reference):
            problem = digest_problem(reference)
            if problem is not None:
                raise RegistryError(ErrorCode.MANIFEST_UNKNOWN,
                                    detail={'reference': reference[:200], 'rule': problem})
            record = await self.meta.get_manifest(cache, reference)
            if record is not None:
                self._hit(upstream)
                await self._used(route, record)
                return Served(record)
            return Served(await self._single(
                ('manifest', cache, reference),
                lambda: self._manifest_once(route, reference)))
        if not is_valid_tag(reference):
            raise RegistryError(ErrorCode.MANIFEST_UNKNOWN,
                                detail={'reference': reference[:200], **TAG_RULE})
        known = await self.meta.cache_tag(cache, reference)
        ttl = route.upstream.tag_ttl if route.upstream is not None else 0
        if known is not None and self.clock() - known.validated_at < ttl:
            # The store may have read the manifest with the tag (one call, SQLite).
            record = known.record or await self.meta.get_manifest(cache, known.digest)
            if record is not None:
                self._hit(upstream)
                await self._used(route, record)
                return Served(record)
        served = await self._single(('tag', cache, reference),
                                    lambda: self._revalidate_once(route, reference, known))
        await self._used(route, served.record)
        return served

    async def _manifest_once(self, route: Route, digest: str,
                             tags: tuple[str, ...] = ()) -> ManifestRecord:
        """Fetch ``digest`` (tagged ``tags``) unless another worker did while we
        waited. Pulls by tag and by digest share it (one key, one lock)."""
        cache, upstream = cache_name_of(route), upstream_of(route)
        async with self._flight(f'cache-manifest:{cache}@{digest}', upstream) as waited:
            record = await self.meta.get_manifest(cache, digest) if waited else None
            if record is not None:
                EVENTS.labels(upstream, 'hit').inc()
                return record
            return await self._fetch_manifest(route, digest, tags)

    async def _revalidate_once(self, route: Route, tag: str, seen: CacheTag | None
                               ) -> Served:
        """Revalidate ``tag`` unless another worker did while we waited for it (its
        validation is newer than the one this request saw): then serve that."""
        cache, upstream = cache_name_of(route), upstream_of(route)
        async with self._flight(f'cache-tag:{cache}:{tag}', upstream) as waited:
            known = await self.meta.cache_tag(cache, tag) if waited else None
            if known is not None and (seen is None
                                      or known.validated_at > seen.validated_at):
                record = await self.meta.get_manifest(cache, known.digest)
                if record is not None:
                    EVENTS.labels(upstream, 'hit').inc()
                    return Served(record)
            return await self._revalidate(route, tag)

    async def _used(self, route: Route, record: ManifestRecord) -> None:
        """Eviction's least-recently-used order (coarse: see evict.py)."""
        assert route.upstream is not None
        if route.upstream.name in self.evictor.capped:  # else nothing to record
            await self.evictor.touch(route.upstream, cache_name_of(route), record.digest)

    async def _revalidate(self, route: Route, tag: str) -> Served:
        cache, upstream = cache_name_of(route), route.upstream
        assert upstream is not None and route.repository is not None
        client = self.upstreams.client(upstream)
        now = self.clock()
        known = await self.meta.cache_tag(cache, tag)
        try:
            head = await client.head_manifest(route.repository, tag)
            record = await self.meta.get_manifest(cache, head.digest)
            if record is None:
                record = await self._single(
                    ('manifest', cache, head.digest),
                    lambda: self._manifest_once(route, head.digest, (tag,)))
                if tag not in {t for t, _ in await self.meta.tags_of(cache, head.digest)}:
                    # The fetch we joined was for a pull by digest (or another tag).
                    await self._store(cache, Manifest(record.content, record.media_type,
                                                      record.digest), (tag,))
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
        upstream = upstream_of(route)
        assert route.upstream is not None and route.repository is not None
        try:
            m = await self.upstreams.client(route.upstream).get_manifest(
                route.repository, digest)
        except UpstreamError as ex:
            if not isinstance(ex, UpstreamNotFound):
                EVENTS.labels(upstream, 'upstream_error').inc()
            raise ex.to_registry_error('manifest') from None
        EVENTS.labels(upstream, 'miss').inc()
        await self._store(cache_name_of(route), m, tags)
        await self.evictor.touch(route.upstream, cache_name_of(route), m.digest)
        self.evictor.soon(route.upstream)
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
            page = await self.registry.referrers(cache_name_of(route), str(d),
                                                 artifact_type, None, REFERRERS_MAX)
            if not page.items:
                raise ex.to_registry_error('referrers') from None
            EVENTS.labels(route.upstream.name, 'stale').inc()
            log.warning('serving cached referrers of %s@%s: %s', cache_name_of(route),
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


__all__ = ['Fetch', 'FetchFailed', 'PullThrough', 'Served']
