"""``oci-ref migrate``: copy a registry from one pair of stores to another.

Written for moving a single node (SQLite + filesystem) onto the scale-out stores
(PostgreSQL + S3), but it speaks only to the store interfaces
(:mod:`oci_ref.storage.interfaces`), so any pair works as source and target.

What is carried over: every blob (streamed from the source's reader into a target
spool, hashed on the way and committed only when it matches its digest; a corrupt
or missing source blob is reported and not copied), every repository's blob links,
every manifest (content re-hashed against its digest, re-parsed for the references,
subject, artifactType and annotations the referrers API reports), every tag, with
the times the source recorded (tag push times, manifest creation times), so the web
view's order and GC's grace periods carry over; and when each cached manifest was
last served, so the target's cache eviction keeps the source's least-recently-used
order (without it, the order would be the order of the fetches).

What is not: upload sessions in progress (their clients start them again; the count
is reported), pull-through cache validation times (a cached tag is revalidated
upstream on its first pull), the token signing key and failed-login counts (tokens
live minutes), and deletions (the target is never pruned).

Safe to run again, and after a run killed at any point: what the target already
holds is skipped (a blob by digest and size, a link, a manifest by digest, a tag
pointing at the same digest). Each blob goes through a spool named after its digest,
discarded first, so a spool a killed run left behind is cleaned up, not leaked.
The run holds the target's GC lock shared, as a push does while it commits: an
online GC there waits, and never sweeps a blob linked before the manifest that
references it is in (the blobs phase may take hours). A tag the target already
points elsewhere is a conflict: kept as the target has it and reported, unless
``overwrite_tags`` (the source wins, e.g. a last pass after the source stopped).
Two migrations into one target are refused (an exclusive ``migrate`` lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from oci_ref.errors import RegistryError
from oci_ref.manifest import ParsedManifest, parse_manifest
from oci_ref.reference import Digest
from oci_ref.storage.interfaces import (
    BlobMissing,
    ManifestRecord,
    Stores,
)
from oci_ref.uploads import GC_LOCK

MIGRATE_LOCK = 'migrate'
TAG_PAGE = 500


class Reporter(Protocol):
    def start(self, phase: str, total: int, total_bytes: int = 0) -> None: ...
    def advance(self, items: int = 1, nbytes: int = 0) -> None: ...
    def finish(self) -> None: ...


class Silent:
    def start(self, phase: str, total: int, total_bytes: int = 0) -> None:
        pass

    def advance(self, items: int = 1, nbytes: int = 0) -> None:
        pass

    def finish(self) -> None:
        pass


class Dating:
    """The target metadata store's clock: the wall clock, except while a manifest
    or a tag is written with the time the source recorded for it (stores take
    content timestamps from their injected clock; lease times use their own)."""

    def __init__(self) -> None:
        self.at: float | None = None

    def __call__(self) -> float:
        return time.time() if self.at is None else self.at

    @contextlib.contextmanager
    def set_to(self, at: float | None) -> Iterator[None]:
        self.at = at or None
        try:
            yield
        finally:
            self.at = None


@dataclass
class MigrationReport:
    blobs_copied: int = 0
    bytes_copied: int = 0
    blobs_present: int = 0
    links_made: int = 0
    links_present: int = 0
    manifests_copied: int = 0
    manifests_present: int = 0
    # Stored without their references (the source held them so: pull-through
    # manifests whose layers were never pulled, or sparse_manifests).
    manifests_sparse: int = 0
    referrers: int = 0  # manifests with a subject, copied or already there
    tags_set: int = 0
    tags_present: int = 0
    repositories: int = 0
    upload_sessions: int = 0  # open in the source; not migrated
    # Signing keys (the token key, the web view's CSRF key): copied so tokens the
    # source issued stay valid; a target that has its own keeps it (``keys_kept``).
    keys_copied: int = 0
    keys_present: int = 0
    keys_kept: int = 0
    # Cached manifests' last uses (eviction's order), newer than the target's.
    cache_uses_copied: int = 0
    failures: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.conflicts

    def summary(self) -> list[str]:
        from oci_ref.progress import human_bytes

        lines = [
            f'blobs: {self.blobs_copied} copied ({human_bytes(self.bytes_copied)}), '
            f'{self.blobs_present} already there',
            f'blob links: {self.links_made} made, {self.links_present} already there',
            f'manifests: {self.manifests_copied} copied, {self.manifests_present} '
            f'already there ({self.referrers} referrers, {self.manifests_sparse} '
            'sparse)',
            f'tags: {self.tags_set} set, {self.tags_present} already there, '
            f'{len(self.conflicts)} conflicts',
            f'repositories: {self.repositories}',
            f'upload sessions in progress: {self.upload_sessions} not migrated '
            '(their clients start them again)',
            f'signing keys: {self.keys_copied} copied, {self.keys_present} already '
            f'there, {self.keys_kept} differing kept (tokens the source issued must '
            'be renewed)' if self.keys_kept else
            f'signing keys: {self.keys_copied} copied, {self.keys_present} already '
            'there',
            f'cached manifests\' last uses (eviction order): {self.cache_uses_copied} '
            'copied',
        ]
        if self.failures:
            lines.append(f'{len(self.failures)} failed (see above)')
        return lines


@dataclass(frozen=True, slots=True)
class _Parsed:
    """What ``put_manifest`` needs besides the content, from one parse."""

    media_type: str
    subject: str | None
    artifact_type: str | None
    annotations: dict[str, str] | None
    blobs: tuple[str, ...]
    children: tuple[str, ...]

    @classmethod
    def of(cls, media_type: str, p: ParsedManifest | None) -> _Parsed:
        if p is None:
            # Stored unvalidated in the source (a pull-through manifest our validator
            # refuses): carried as it is, references unrecorded, as the cache did.
            return cls(media_type, None, None, None, (), ())
        return cls(media_type, p.subject.digest if p.subject else None, p.artifact_type,
                   p.annotations, tuple(d.digest for d in p.required_blobs()),
                   tuple(d.digest for d in p.manifests))


class Migration:
    def __init__(self, source: Stores, target: Stores, dating: Dating, *,
                 overwrite_tags: bool = False, verify_existing: bool = False,
                 jobs: int = 4, progress: Reporter | None = None):
        self.source, self.target, self.dating = source, target, dating
        self.overwrite_tags = overwrite_tags
        self.verify_existing = verify_existing
        self.jobs = max(1, jobs)
        self.progress = progress or Silent()
        self.report = MigrationReport()
        self._repos: set[str] = set()

    async def run(self) -> MigrationReport | None:
        """The report; None when another migration into the target is running."""
        meta = self.target.meta
        async with meta.lock(MIGRATE_LOCK, exclusive=True, wait=False) as lease:
            if lease is None:
                return None
            # The GC lock, shared (as a push holds it while it commits), for the
            # whole run: a GC on the target waits until the manifests that
            # reference the blobs linked first are in, however long that takes.
            async with meta.lock(GC_LOCK, exclusive=False, wait=True):
                stats = await self.source.meta.stats()
                self.report.upload_sessions = stats.upload_sessions
                await self._blobs()
                await self._manifests()
                await self._uses()
                await self._keys()
            self.report.repositories = len(self._repos)
            return self.report

    async def _keys(self) -> None:
        """The keys replicas sign with (issue 14: kept in the metadata store), so a
        token the single node issued stays valid on the replicas. A target that
        made its own already (replicas started first) keeps it: replacing a key in
        use would void the tokens issued with it."""
        from oci_ref.auth import TOKEN_KEY
        from oci_ref.ui.csrf import KEY_NAME as CSRF_KEY
        from oci_ref.variations import REDIRECT_KEY

        for name in (TOKEN_KEY, CSRF_KEY, REDIRECT_KEY):
            key = await self.source.meta.signing_key(name, None)
            if key is None:
                continue
            there = await self.target.meta.signing_key(name, None)
            if there is None:
                stored = await self.target.meta.signing_key(name, key)
                if stored == key:
                    self.report.keys_copied += 1
                    continue
                there = stored  # a replica made one meanwhile
            if there == key:
                self.report.keys_present += 1
            else:
                self.report.keys_kept += 1

    async def _uses(self) -> None:
        """The source's last use of each cached manifest the target holds, unless
        the target recorded a later one itself (a use never moves back)."""
        there = {(r, d): at for r, d, at in await self.target.meta.cache_uses()}
        for repo, digest, at in await self.source.meta.cache_uses():
            if there.get((repo, digest), float('-inf')) >= at:
                continue
            if await self.target.meta.get_manifest(repo, digest) is None:
                continue  # not copied (reported), or evicted in the source meanwhile
            await self.target.meta.touch_cached(repo, digest, at)
            self.report.cache_uses_copied += 1

    def _fail(self, message: str) -> None:
        self.report.failures.append(message)

    # -- blobs ---------------------------------------------------------------------

    async def _blobs(self) -> None:
        sizes = await self.source.meta.blob_sizes()
        present = {b.digest: b.size async for b in self.target.blobs.scan()}
        self.progress.start('blobs', len(sizes), sum(sizes.values()))
        work = iter(sorted(sizes.items()))

        async def copier() -> None:
            for digest, size in work:  # one iterator: each blob taken by one copier
                repos = await self.source.meta.blob_repos(digest)
                # A blob no repository links is GC's to remove from the source: not
                # copied (the target would hold a file nothing accounts for).
                streamed = 0
                if repos:
                    self._repos.update(repos)
                    streamed = await self._blob(digest, size, present.get(digest), repos)
                self.progress.advance(1, max(0, size - streamed))

        # Several blobs in flight: a remote store's latency per call, not its
        # bandwidth, bounds one copier. A failure cancels the others.
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(self.jobs):
                    group.create_task(copier())
        except ExceptionGroup as group_error:
            raise group_error.exceptions[0] from None  # e.g. StoreUnavailable
        self.progress.finish()

    async def _blob(self, digest: str, size: int, there: int | None,
                    repos: list[str]) -> int:
        """Make the blob present and linked in the target, or report why not; the
        bytes counted in the progress on the way."""
        try:
            d = Digest.parse(digest)
        except RegistryError:
            self._fail(f'blob {digest}: not a valid digest in the source; not copied')
            return 0
        if there is not None:
            if await self._check_present(d, size, there):
                self.report.blobs_present += 1
                await self._links(digest, size, repos)
            return 0
        streamed = 0

        async def counted(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
            # A large blob moves the bar while it streams, not only at its end.
            nonlocal streamed
            async for chunk in body:
                streamed += len(chunk)
                self.progress.advance(0, len(chunk))
                yield chunk
        spool = f'tmp-migrate-{d.algorithm}-{d.encoded[:48]}'
        # A spool a killed run left under this name goes first (for S3, its
        # multipart upload is aborted).
        await self.target.blobs.discard(spool)
        await self.target.blobs.create_spool(spool)
        try:
            hasher = d.hasher()
            try:
                body = await self.source.blobs.reader(d)
            except BlobMissing:
                # Unless a GC of the source (still serving) removed it meanwhile.
                if await self.source.meta.blob_repos(digest):
                    self._fail(f'blob {digest}: missing in the source; not copied')
                return 0
            written = await self.target.blobs.append(spool, 0, counted(body), [hasher])
            if hasher.hexdigest() != d.encoded:
                self._fail(f'blob {digest}: corrupt in the source (its content hashes '
                           f'to {d.algorithm}:{hasher.hexdigest()}); not copied')
                return streamed
            if written != size:
                self._fail(f'blob {digest}: {written} bytes in the source, its metadata '
                           f'says {size}; not copied')
                return streamed
            await self.target.blobs.commit(spool, d)
        finally:
            await self.target.blobs.discard(spool)
        self.report.blobs_copied += 1
        self.report.bytes_copied += size
        await self._links(digest, size, repos)
        return streamed

    async def _check_present(self, d: Digest, size: int, there: int) -> bool:
        if there != size:
            self._fail(f'blob {d}: the target holds {there} bytes, the source {size}; '
                       'left alone (run oci-ref fsck --repair on the target)')
            return False
        if self.verify_existing:
            actual = await self.target.blobs.hash(d)
            if actual != d.encoded:
                self._fail(f'blob {d}: corrupt in the target (hashes to '
                           f'{d.algorithm}:{actual}); left alone (run oci-ref fsck '
                           '--repair on the target, then migrate again)')
                return False
        return True

    async def _links(self, digest: str, size: int, repos: list[str]) -> None:
        """Link a blob the target holds into each of ``repos`` not linking it yet."""
        for repo in repos:
            if await self.target.meta.blob_size(repo, digest) == size:
                self.report.links_present += 1
                continue
            await self.target.meta.link_blob(repo, digest, size)
            self.report.links_made += 1

    # -- manifests and tags ------------------------------------------------------

    async def _manifests(self) -> None:
        by_repo: dict[str, list[str]] = {}
        async for m in self.source.meta.manifests():
            by_repo.setdefault(m.repo, []).append(m.digest)
        self.progress.start('manifests', sum(map(len, by_repo.values())))
        for repo in sorted(by_repo):
            self._repos.add(repo)
            await self._repository(repo, by_repo[repo])
        self.progress.finish()

    async def _repository(self, repo: str, digests: list[str]) -> None:
        tags = await self._source_tags(repo)
        parsed: dict[str, _Parsed] = {}
        for digest in digests:
            record = await self.source.meta.get_manifest(repo, digest)
            if record is None:  # deleted in the source meanwhile
                continue
            p = await self._parse(repo, record)
            if p is not None:
                parsed[digest] = p
        failed: set[str] = set(digests) - set(parsed)
        for digest in _children_first(parsed):
            bad = [c for c in parsed[digest].children if c in failed]
            if bad:
                self._fail(f'manifest {repo}@{digest}: not copied: its child {bad[0]} '
                           'was not copied')
                failed.add(digest)
            elif not await self._manifest(repo, digest, parsed[digest],
                                          tags.get(digest, [])):
                failed.add(digest)
            self.progress.advance()
        self.progress.advance(len(digests) - len(parsed))

    async def _source_tags(self, repo: str) -> dict[str, list[tuple[str, float]]]:
        """digest -> [(tag, pushed_at)] for one repository of the source."""
        found: dict[str, list[tuple[str, float]]] = {}
        offset = 0
        while True:
            page = await self.source.meta.tag_details(
                repo, by_pushed=True, descending=False, offset=offset, limit=TAG_PAGE)
            for t in page:
                found.setdefault(t.digest, []).append((t.tag, t.pushed_at))
            if len(page) < TAG_PAGE:
                return found
            offset += len(page)

    async def _parse(self, repo: str, record: ManifestRecord) -> _Parsed | None:
        """Verify the content against its digest and parse it; None (reported) when
        it does not match."""
        try:
            d = Digest.parse(record.digest)
        except RegistryError:
            self._fail(f'manifest {repo}@{record.digest}: not a valid digest in the '
                       'source; not copied')
            return None
        actual = await asyncio.to_thread(Digest.of, record.content, d.algorithm)
        if actual != d:
            self._fail(f'manifest {repo}@{record.digest}: corrupt in the source (its '
                       f'content hashes to {actual}); not copied')
            return None
        try:
            p: ParsedManifest | None = await asyncio.to_thread(
                parse_manifest, record.content, record.media_type)
        except RegistryError:
            p = None
        return _Parsed.of(record.media_type, p)

    async def _manifest(self, repo: str, digest: str, p: _Parsed,
                        tags: list[tuple[str, float]]) -> bool:
        target = self.target.meta
        present = await target.get_manifest(repo, digest) is not None
        to_set = await self._tags_to_set(repo, digest, tags)
        if present and not to_set:
            self._counted(p, present=True)
            return True
        record = await self.source.meta.get_manifest(repo, digest)
        if record is None:
            return True  # deleted in the source meanwhile
        created = await self.source.meta.manifest_pushed_at(repo, digest)
        # With its tags in one write: a tagged image is never untagged in the
        # target, not even for the moment an online GC could see.
        names = [t for t, _ in to_set]
        missing = await self._put(repo, record, p, names, created, sparse=False)
        if missing:
            needed = [m for m in missing if await self._in_source(repo, m)]
            if needed:
                self._fail(f'manifest {repo}@{digest}: not copied: {needed[0]} it '
                           'references was not copied')
                return False
            # The source holds it without those references: keep it so.
            await self._put(repo, record, p, names, created, sparse=True)
            self.report.manifests_sparse += 1
        for tag, pushed_at in to_set:
            if pushed_at != created:  # each tag keeps its own push time
                await self._put(repo, record, p, [tag], pushed_at, sparse=True)
        self.report.tags_set += len(to_set)
        self._counted(p, present=present)
        return True

    def _counted(self, p: _Parsed, *, present: bool) -> None:
        if present:
            self.report.manifests_present += 1
        else:
            self.report.manifests_copied += 1
        if p.subject is not None:
            self.report.referrers += 1

    async def _put(self, repo: str, record: ManifestRecord, p: _Parsed,
                   tags: list[str], at: float | None, *, sparse: bool) -> list[str]:
        with self.dating.set_to(at):
            return await self.target.meta.put_manifest(
                repo, record.digest, p.media_type, record.content, subject=p.subject,
                artifact_type=p.artifact_type, annotations=p.annotations,
                blobs=p.blobs, children=p.children, tags=tags, sparse=sparse)

    async def _tags_to_set(self, repo: str, digest: str,
                           tags: list[tuple[str, float]]) -> list[tuple[str, float]]:
        if not tags:
            return []
        there = {t for t, _ in await self.target.meta.tags_of(repo, digest)}
        to_set = []
        for tag, pushed_at in tags:
            if tag in there:
                self.report.tags_present += 1
                continue
            other = await self.target.meta.get_tagged_manifest(repo, tag)
            if other is not None and not self.overwrite_tags:
                self.report.conflicts.append(
                    f'tag {repo}:{tag}: the target points it at {other.digest}, the '
                    f'source at {digest}; kept the target\'s (--overwrite-tags to '
                    'replace it)')
                continue
            to_set.append((tag, pushed_at))
        return to_set

    async def _in_source(self, repo: str, digest: str) -> bool:
        """Whether the source repository holds ``digest`` (as a blob or manifest)."""
        return (await self.source.meta.blob_size(repo, digest) is not None
                or await self.source.meta.get_manifest(repo, digest) is not None)


def _children_first(parsed: dict[str, _Parsed]) -> list[str]:
    """The digests in an order where an index comes after the manifests it lists
    (put_manifest wants them present); cycles cannot exist (content addressing)."""
    order: list[str] = []
    seen: set[str] = set()
    for root in sorted(parsed):
        stack: list[tuple[str, bool]] = [(root, False)]
        while stack:
            digest, expanded = stack.pop()
            if expanded:
                order.append(digest)
                continue
            if digest in seen or digest not in parsed:
                continue
            seen.add(digest)
            stack.append((digest, True))
            stack.extend((c, False) for c in parsed[digest].children)
    return order


__all__ = ['MIGRATE_LOCK', 'Dating', 'Migration', 'MigrationReport', 'Reporter']
