"""Garbage collection and integrity checks (``oci-ref gc``, ``oci-ref fsck``, online GC).

What GC removes, oldest first and only what is older than the grace period:

1. with ``untagged``: manifests no tag reaches, directly, as an index child, or as a
   referrer (``subject``) of a kept manifest; their now-orphaned referrers go too;
2. blob links (repo <-> blob) that no manifest of that repository references;
3. blobs no repository links any more: the row, then the content;
4. repositories left with no tag, manifest or blob link (they leave ``_catalog``).

What the grace period keeps (unreferenced, but younger) is reported, so a pass right
after a delete says why it removed nothing.

Safety with a live server: the pass holds the metadata store's ``gc`` lock
exclusively while blob commits take it shared (an upload never dedups against
content being deleted), and the metadata sweep is one transaction against which a
manifest PUT's "are the blobs here?" check is atomic: either the PUT is first (its
blobs are referenced, kept) or the sweep is (the PUT fails with
MANIFEST_BLOB_UNKNOWN; nothing dangles). Pushing or mounting a blob renews its link,
so the grace period counts from the last push. Everything here speaks to the store
interfaces only, and is async: online GC runs in a worker without stalling it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from oci_ref.reference import Digest
from oci_ref.registry import GC_LOCK, Registry
from oci_ref.storage.interfaces import BlobMissing, ManifestGraph

Progress = Callable[[str, int, int], None]


@dataclass
class GCReport:
    dry_run: bool
    grace: float = 0
    manifests: list[tuple[str, str]] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)
    blobs: list[str] = field(default_factory=list)
    orphan_files: list[str] = field(default_factory=list)
    repositories: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    # Unreferenced, but younger than the grace period: kept this time.
    young_links: list[tuple[str, str]] = field(default_factory=list)
    young_manifests: list[tuple[str, str]] = field(default_factory=list)
    # Pull-through cache (issue 13): how many of the removed manifests and blob
    # links were cached content (under an upstream's prefix), not pushed.
    cached_manifests: int = 0
    cached_links: int = 0

    def summary(self) -> str:
        verb = 'would remove' if self.dry_run else 'removed'

        def cached(n: int) -> str:
            return f' ({n} cached)' if n else ''

        text = (f'{verb} {len(self.manifests)} manifests{cached(self.cached_manifests)}, '
                f'{len(self.links)} blob links{cached(self.cached_links)}, '
                f'{len(self.blobs) + len(self.orphan_files)} blobs '
                f'({self.bytes_freed / 2**20:.1f} MiB)')
        if self.repositories:
            text += f', {len(self.repositories)} empty repositories'
        return text

    def kept(self) -> str | None:
        """Why a pass left unreferenced content (None when it left none)."""
        if not (self.young_links or self.young_manifests):
            return None
        parts = []
        if self.young_manifests:
            parts.append(f'{len(self.young_manifests)} untagged manifests')
        if self.young_links:
            parts.append(f'{len(self.young_links)} unreferenced blob links')
        return (f'kept {" and ".join(parts)} younger than the grace period '
                f'({self.grace:g} s); they go in a later pass, or now with --grace 0')


def unreachable(graph: ManifestGraph, cutoff: float) -> list[str]:
    """The manifests of ``graph`` no tag reaches (through index children and
    referrers of kept manifests) and created before ``cutoff``."""
    keep = set(graph.tagged) & set(graph.created)
    referrers: dict[str, list[str]] = {}
    for digest, subject in graph.subjects.items():
        referrers.setdefault(subject, []).append(digest)
    todo = list(keep)
    while todo:
        digest = todo.pop()
        for nxt in graph.children.get(digest, []) + referrers.get(digest, []):
            if nxt in graph.created and nxt not in keep:
                keep.add(nxt)
                todo.append(nxt)
    return [d for d, created in graph.created.items()
            if d not in keep and created < cutoff]


async def collect(registry: Registry, *, untagged: bool = False, grace: float = 3600,
                  dry_run: bool = False, progress: Progress | None = None,
                  cached: Callable[[str], bool] | None = None) -> GCReport | None:
    """One GC pass (or, with ``dry_run``, what it would remove: the same sweep, its
    transaction rolled back). None if another pass or a blob commit holds the lock.
    ``cached`` tells a pull-through cache's repositories (counted apart)."""
    async with registry.meta.lock(GC_LOCK, exclusive=True, wait=False) as locked:
        if not locked:
            return None
        report = await _sweep(registry, untagged, grace, dry_run, progress)
    if cached is not None:
        report.cached_manifests = sum(cached(r) for r, _ in report.manifests)
        report.cached_links = sum(cached(r) for r, _ in report.links)
    return report


async def census(registry: Registry, prefixes: list[str]) -> dict[str, dict[str, int]]:
    """Manifests and blobs, pushed and cached (under one of the upstream
    ``prefixes``); a blob both pushed and cached counts as pushed (eviction leaves
    it). For fsck's report."""
    counts = await registry.meta.cache_counts(prefixes)
    return {'pushed': {'manifests': counts['pushed_manifests'],
                       'blobs': counts['pushed_blobs']},
            'cached': {'manifests': counts['cached_manifests'],
                       'blobs': counts['cached_blobs']}}


async def _sweep(registry: Registry, untagged: bool, grace: float, dry_run: bool,
                 progress: Progress | None) -> GCReport:
    cutoff = registry.clock() - grace
    swept = await registry.meta.sweep(
        cutoff, unreachable=unreachable if untagged else None, dry_run=dry_run)
    report = GCReport(dry_run, grace, swept.manifests, swept.links,
                      [d for d, _ in swept.blobs], repositories=swept.repositories,
                      bytes_freed=sum(s for _, s in swept.blobs),
                      young_links=swept.young_links,
                      young_manifests=swept.young_manifests)
    if not dry_run:
        # Rows first (committed above), content after: a crash in between leaves
        # orphan files only, which the next pass removes.
        for i, (digest, _) in enumerate(swept.blobs, 1):
            await registry.blobs.delete(Digest.parse(digest))
            if progress:
                progress('deleting blobs', i, len(swept.blobs))
    known = await registry.meta.blob_sizes()
    async for info in registry.blobs.scan():
        # Content without a row (a crash between commit and link), old enough.
        if info.digest in known or info.modified >= cutoff:
            continue
        report.orphan_files.append(info.digest)
        report.bytes_freed += info.size
        if not dry_run:
            await registry.blobs.delete(Digest.parse(info.digest))
    return report


# -- fsck -----------------------------------------------------------------------------


@dataclass
class Problem:
    kind: str
    subject: str
    detail: str
    serious: bool = True

    def to_dict(self) -> dict[str, object]:
        return {'kind': self.kind, 'subject': self.subject, 'detail': self.detail,
                'serious': self.serious}


async def fsck(registry: Registry, *, repair: bool = False,
               progress: Progress | None = None,
               cached: Callable[[str], bool] | None = None) -> list[Problem]:
    """Re-hash every blob, check every manifest and its references.

    Serious problems (corrupt or missing content) make fsck fail; with ``repair``
    the corrupt content is moved to quarantine and its rows removed, so clients get
    404 and can push again. Notices (references to content deleted through the API,
    orphan files) are reported but do not fail.
    """
    problems: list[Problem] = []
    files = [info async for info in registry.blobs.scan()]
    intact: dict[str, int] = {}
    for i, info in enumerate(files, 1):
        if progress:
            progress('hashing blobs', i, len(files))
        d = Digest.parse(info.digest)
        try:
            if await registry.blobs.hash(d) == d.encoded:
                intact[info.digest] = info.size
                continue
        except BlobMissing:
            continue  # deleted while we looked
        problems.append(Problem('blob-corrupt', info.digest,
                                f'{info.digest}: the content does not hash to its name'))
        if repair:
            await registry.blobs.quarantine(d)
            await registry.meta.forget_blob(info.digest)
    corrupt = {p.subject for p in problems}
    known = await registry.meta.blob_sizes()
    for digest, size in known.items():
        if digest in corrupt:
            continue
        if digest not in intact:
            problems.append(Problem('blob-missing', digest, 'no file for a stored blob'))
            if repair:
                await registry.meta.forget_blob(digest)
        elif intact[digest] != size:
            problems.append(Problem('blob-size', digest,
                                    f'file has {intact[digest]} bytes, recorded {size}'))
    problems += [Problem('file-orphan', d, 'file without a blob row (gc removes it)',
                         serious=False) for d in intact if d not in known]
    async for m in registry.meta.manifests():
        d = Digest.parse(m.digest)
        if hashlib.new(d.algorithm, m.content).hexdigest() == d.encoded:
            continue
        problems.append(Problem('manifest-corrupt', f'{m.repo}@{m.digest}',
                                'stored bytes do not hash to the digest'))
        if repair:
            await registry.blobs.quarantine_manifest(m.repo, m.digest, m.content)
            await registry.meta.delete_manifest(m.repo, m.digest)
    for repo, digest, child in await registry.meta.dangling_references():
        if cached is not None and cached(repo):
            continue  # a pull-through cache fetches layers when asked (issue 13)
        problems.append(Problem('reference-missing', f'{repo}@{digest}',
                                f'references {child}, which is not in {repo} '
                                '(absent: a sparse manifest, deleted through the API, '
                                'or lost)', serious=False))
    return problems


__all__ = ['GCReport', 'Problem', 'census', 'collect', 'fsck', 'unreachable']
