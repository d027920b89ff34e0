"""Eviction of the pull-through cache (issue 13): a size cap per upstream
(``cache_max_bytes``), least-recently-used, by what the metadata knows.

- What counts: an upstream's cached manifests and each blob linked under its
  prefix once (one copy per digest in the blob store). Pushed content is never
  counted, chosen or removed: pushes into an upstream's prefix are refused, so
  nothing pushed lives there.
- What goes, until the cache is under its cap (:func:`choose`, pure): first blob
  links no cached manifest of their repository references (a layer pulled by
  digest alone, or left by an earlier eviction), oldest first; then manifests,
  least recently served first, each with the links only it kept in its
  repository. A blob's content goes only when, after that, no repository links
  it and no kept manifest (cached or pushed, anywhere) references it.
- Last use is written coarsely: at most once per ``cache_touch_interval`` per
  manifest and worker (:meth:`Evictor.touch`), never on every GET.
- When: after each fetch into the cache commits (a manifest stored, a blob
  linked), in the background, once per upstream at a time; and on each purge
  round (so a lowered cap applies without new pulls). The check is one read;
  only a cache over its cap takes the write lock.
- Nothing used or fetched in the last ``cache_min_age`` seconds goes (the cap
  may be exceeded meanwhile): a client between a blob's size and its bytes, or
  tailing a download that just committed, finds the file where it was.
- Safety: the removal is one transaction (a concurrent pull sees the manifest,
  its tags and links, or none of them, and fetches again); blob content is
  deleted after the commit under the GC lock held exclusively, which blob
  commits take shared, so a download committing the same digest meanwhile is
  never undone. A reader that had opened the file keeps reading it (POSIX).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence

from oci_ref.reference import Digest
from oci_ref.registry import GC_LOCK, Registry
from oci_ref.storage.interfaces import (
    CachedLink,
    CachedManifest,
    Evicted,
    EvictionPlan,
    StoreUnavailable,
)
from oci_ref.upstream.config import Upstream
from oci_ref.upstream.stats import EVICTED, EVICTED_BYTES

log = logging.getLogger('oci_ref.cache')
# Touches remembered per worker before the memory is cleared (then a touch each).
TOUCH_MEMORY = 100_000


def choose(manifests: Sequence[CachedManifest], links: Sequence[CachedLink], cap: int,
           young_after: float = float('inf')) -> EvictionPlan:
    """What to remove from one upstream's cache to bring it to ``cap`` bytes or
    under (see the module's docstring); nothing when it is under already. Nothing
    used or linked at or after ``young_after`` goes: the cache stays over its cap
    until it is older."""
    sizes = {link.digest: link.size for link in links}
    holders = Counter(link.digest for link in links)  # links per digest, in range
    usage = sum(m.size for m in manifests) + sum(sizes.values())
    if usage <= cap:
        return EvictionPlan(usage, 0)
    # How many kept manifests of each repository reference each digest.
    refs: dict[str, Counter[str]] = {}
    for m in manifests:
        refs.setdefault(m.repo, Counter()).update(set(m.children))
    linked = {(link.repo, link.digest) for link in links}
    left = usage
    gone_links: list[tuple[str, str]] = []

    young = {(link.repo, link.digest) for link in links if link.linked_at >= young_after}

    def drop(repo: str, digest: str) -> None:
        nonlocal left
        if (repo, digest) in young:
            return
        linked.discard((repo, digest))
        gone_links.append((repo, digest))
        holders[digest] -= 1
        if holders[digest] == 0:
            left -= sizes[digest]

    for link in sorted(links, key=lambda x: (x.linked_at, x.repo, x.digest)):
        if left <= cap or link.linked_at >= young_after:
            break
        if not refs.get(link.repo, Counter())[link.digest]:
            drop(link.repo, link.digest)
    gone: list[tuple[str, str]] = []
    for m in sorted(manifests, key=lambda x: (x.used_at, x.repo, x.digest)):
        if left <= cap or m.used_at >= young_after:
            break
        gone.append((m.repo, m.digest))
        left -= m.size
        counts = refs[m.repo]
        for child in set(m.children):
            counts[child] -= 1
            if counts[child] == 0 and (m.repo, child) in linked:
                drop(m.repo, child)
    return EvictionPlan(usage, usage - left, tuple(gone), tuple(gone_links))


class Evictor:
    """Keeps each capped upstream's cache under its cap (one per worker)."""

    def __init__(self, registry: Registry, upstreams: Sequence[Upstream],
                 clock: Callable[[], float] = time.time):
        self.registry = registry
        self.meta = registry.meta
        self.capped = {u.name: u for u in upstreams if u.cache_max_bytes}
        self.clock = clock
        self._touched: dict[tuple[str, str], float] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()

    async def touch(self, upstream: Upstream, repo: str, digest: str) -> None:
        """Record a use of a cached manifest, at most once per interval; a store
        that cannot take it now costs the LRU order some precision, not the pull."""
        if upstream.name not in self.capped:
            return
        now = self.clock()
        key = (repo, digest)
        last = self._touched.get(key)
        if last is not None and now - last < upstream.cache_touch_interval:
            return
        if len(self._touched) >= TOUCH_MEMORY:
            self._touched.clear()
        self._touched[key] = now
        try:
            await self.meta.touch_cached(repo, digest, now)
        except StoreUnavailable as ex:
            log.warning('could not record the use of %s@%s: %s', repo, digest, ex)

    def soon(self, upstream: Upstream) -> None:
        """Check ``upstream``'s cache in the background (after a fetch committed);
        a check asked for while one runs runs once more after it."""
        if upstream.name not in self.capped:
            return
        if upstream.name in self._running:
            self._again.add(upstream.name)
            return
        task = asyncio.get_running_loop().create_task(self._checks(upstream))
        self._running[upstream.name] = task

    async def _checks(self, upstream: Upstream) -> None:
        try:
            while True:
                self._again.discard(upstream.name)
                try:
                    await self.evict(upstream)
                except StoreUnavailable as ex:
                    log.warning('cache eviction of %s skipped: %s', upstream.name, ex)
                except Exception:
                    log.exception('cache eviction of %s failed', upstream.name)
                if upstream.name not in self._again:
                    return
        finally:
            self._running.pop(upstream.name, None)

    async def evict_all(self) -> None:
        """The purge round's pass over every capped upstream."""
        for upstream in self.capped.values():
            await self.evict(upstream)

    async def evict(self, upstream: Upstream) -> Evicted | None:
        """Bring ``upstream``'s cache under its cap now; what went, or None when
        it was under already."""
        cap = upstream.cache_max_bytes
        if not cap or await self.meta.cache_usage(upstream.name) <= cap:
            return None
        young_after = self.clock() - upstream.cache_min_age
        async with self.meta.lock(GC_LOCK, exclusive=True, wait=True):
            evicted = await self.meta.evict_cached(
                upstream.name, cap, functools.partial(choose, young_after=young_after))
            for digest, _ in evicted.blobs:
                await self.registry.blobs.delete(Digest.parse(digest))
        if evicted.manifests or evicted.links:
            EVICTED.labels(upstream.name, 'manifest').inc(len(evicted.manifests))
            EVICTED.labels(upstream.name, 'blob').inc(len(evicted.blobs))
            EVICTED_BYTES.labels(upstream.name).inc(evicted.freed)
            log.info('cache of %s: %d bytes over its cap of %d; evicted %d manifests, '
                     '%d blob links, %d blobs', upstream.name, evicted.usage - cap, cap,
                     len(evicted.manifests), len(evicted.links), len(evicted.blobs))
        return evicted

    async def aclose(self, timeout: float = 30.0) -> None:
        """Let running checks finish (a cancelled one would leave the files of
        blobs whose rows it removed for GC to find); cancel what overruns."""
        tasks = list(self._running.values())
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=timeout)
            for task in late:
                task.cancel()


__all__ = ['Evictor', 'choose']
