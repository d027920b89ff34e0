"""``oci-ref prefetch``: fill the pull-through cache ahead of time (issue 13), for CI
runners that must work offline later.

Each reference (``<upstream name>/<repository>:<tag>`` or ``@<digest>``) goes through
the same PullThrough as a client's pull: its manifest, every platform of an index,
every config and layer, and the referrers of each (signatures, SBOMs) with their
blobs. Blobs already cached are not fetched again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from oci_ref.errors import ErrorCode, RegistryError
from oci_ref.reference import Digest
from oci_ref.upstream.cache import PullThrough
from oci_ref.upstream.routing import Route

Progress = Callable[[str, int, int], None]
INDEX_TYPES = ('application/vnd.oci.image.index.v1+json',
               'application/vnd.docker.distribution.manifest.list.v2+json')


@dataclass
class Report:
    manifests: int = 0
    blobs: int = 0
    bytes: int = 0
    failed: list[str] = field(default_factory=list)


async def prefetch(cache: PullThrough, references: list[str],
                   progress: Progress | None = None) -> Report:
    report = Report()
    for text in references:
        name, reference = _split(text)
        route = cache.upstreams.route(name, None)
        if not route.proxied:
            report.failed.append(f'{text}: {name} is under no upstream prefix')
            continue
        try:
            await _image(cache, route, reference, report, progress, set())
        except RegistryError as ex:
            report.failed.append(f'{text}: {ex}')
    return report


def _split(text: str) -> tuple[str, str]:
    name, at, digest = text.partition('@')
    if at:
        return name, digest
    slash = name.rfind('/')
    colon = name.rfind(':')
    if colon > slash:
        return name[:colon], name[colon + 1:]
    return name, 'latest'


async def _image(cache: PullThrough, route: Route, reference: str, report: Report,
                 progress: Progress | None, seen: set[str]) -> None:
    served = await cache.manifest(route, reference)
    record = served.record
    if record.digest in seen:
        return
    seen.add(record.digest)
    report.manifests += 1
    try:
        doc = json.loads(record.content)
    except ValueError:
        return
    if record.media_type in INDEX_TYPES or 'manifests' in doc:
        for child in doc.get('manifests') or []:
            await _image(cache, route, str(child['digest']), report, progress, seen)
    else:
        descriptors = [d for d in [doc.get('config'), *(doc.get('layers') or [])]
                       if isinstance(d, dict) and 'digest' in d]
        for i, d in enumerate(descriptors, 1):
            await _blob(cache, route, str(d['digest']), report)
            if progress:
                progress(f'{route.cache_name}@{record.digest[:19]}', i, len(descriptors))
    found, _ = await cache.referrers(route, record.digest, None)
    try:
        referrers = json.loads(found.body).get('manifests') or []
    except ValueError:
        referrers = []
    for r in referrers:
        await _image(cache, route, str(r['digest']), report, progress, seen)


async def _blob(cache: PullThrough, route: Route, digest: str, report: Report) -> None:
    d, size, fetch = await cache.blob_size(route, digest)
    if fetch is None:
        return  # cached already
    async for chunk in await cache.read_blob(d, fetch, 0, size):
        report.bytes += len(chunk)
    await fetch.finished.wait()
    if fetch.error is not None:
        raise _failed(d, fetch.error)
    report.blobs += 1


def _failed(d: Digest, error: BaseException) -> RegistryError:
    return RegistryError(ErrorCode.BLOB_UNKNOWN, f'{d}: {error}')


__all__ = ['Report', 'prefetch']
