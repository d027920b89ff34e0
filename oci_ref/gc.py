"""Garbage collection and integrity checks (``oci-ref gc``, ``oci-ref fsck``, online GC).

What GC removes, oldest first and only what is older than the grace period:

1. with ``untagged``: manifests no tag reaches, directly, as an index child, or as a
   referrer (``subject``) of a kept manifest; their now-orphaned referrers go too;
2. blob links (repo <-> blob) that no manifest of that repository references;
3. blobs no repository links any more: the row, then the file.

Safety with a live server: the sweep holds the exclusive GC lock while blob commits
take it shared (an upload never dedups against a file being deleted), and it runs in
one BEGIN IMMEDIATE transaction against which a manifest PUT's "are the blobs
here?" check is atomic: either the PUT is first (its blobs are referenced, kept) or
the sweep is (the PUT fails with MANIFEST_BLOB_UNKNOWN; nothing dangles). Pushing or
mounting a blob renews its link, so the grace period counts from the last push.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from oci_ref.reference import Digest
from oci_ref.registry import Registry

Progress = Callable[[str, int, int], None]


@dataclass
class GCReport:
    dry_run: bool
    manifests: list[tuple[str, str]] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)
    blobs: list[str] = field(default_factory=list)
    orphan_files: list[str] = field(default_factory=list)
    bytes_freed: int = 0

    def summary(self) -> str:
        verb = 'would remove' if self.dry_run else 'removed'
        return (f'{verb} {len(self.manifests)} manifests, {len(self.links)} blob links, '
                f'{len(self.blobs) + len(self.orphan_files)} blobs '
                f'({self.bytes_freed / 2**20:.1f} MiB)')


def collect(registry: Registry, *, untagged: bool = False, grace: float = 3600,
            dry_run: bool = False, progress: Progress | None = None) -> GCReport | None:
    """One GC pass (or, with ``dry_run``, what it would remove: the same sweep, its
    transaction rolled back). None if another pass holds the lock."""
    with registry.store.gc_lock(exclusive=True, wait=False) as locked:
        if not locked:
            return None
        return _sweep(registry, untagged, time.time() - grace, dry_run, progress)


def _sweep(registry: Registry, untagged: bool, cutoff: float, dry_run: bool,
           progress: Progress | None) -> GCReport:
    db = registry.meta.db
    report = GCReport(dry_run)
    files: list[Digest] = []
    with registry.meta.immediate(commit=not dry_run):
        if untagged:
            report.manifests = _unreachable_manifests(registry, cutoff)
            for repo, digest in report.manifests:
                registry.meta.delete_manifest(repo, digest)
        report.links = [
            (r, d) for r, d in db.execute(
                'SELECT l.repo, l.digest FROM repo_blobs l WHERE l.created_at < ? AND '
                'NOT EXISTS (SELECT 1 FROM manifest_refs m '
                'WHERE m.repo = l.repo AND m.child = l.digest)', [cutoff])
        ]
        for repo, digest in report.links:
            db.execute('DELETE FROM repo_blobs WHERE repo = ? AND digest = ?',
                       [repo, digest])
        for digest, size in list(db.execute(
                'SELECT b.digest, b.size FROM blobs b WHERE NOT EXISTS '
                '(SELECT 1 FROM repo_blobs l WHERE l.digest = b.digest)')):
            report.blobs.append(digest)
            report.bytes_freed += size
            files.append(Digest.parse(digest))
            db.execute('DELETE FROM blobs WHERE digest = ?', [digest])
    if not dry_run:
        # Rows first (committed above), files after: a crash in between leaves
        # orphan files only, which the next pass removes.
        for i, digest in enumerate(files, 1):
            registry.store.delete(digest)
            if progress:
                progress('deleting blobs', i, len(files))
    report.orphan_files, freed = _orphan_files(registry, cutoff, delete=not dry_run)
    report.bytes_freed += freed
    return report


def _unreachable_manifests(registry: Registry, cutoff: float) -> list[tuple[str, str]]:
    db = registry.meta.db
    manifests: dict[str, dict[str, tuple[float, str | None]]] = {}
    for repo, digest, created, subject in db.execute(
            'SELECT repo, digest, created_at, subject FROM manifests'):
        manifests.setdefault(repo, {})[digest] = (created, subject)
    doomed: list[tuple[str, str]] = []
    for repo, found in manifests.items():
        keep = {d for (d,) in db.execute('SELECT digest FROM tags WHERE repo = ?', [repo])}
        children: dict[str, list[str]] = {}
        for parent, child in db.execute(
                'SELECT digest, child FROM manifest_refs WHERE repo = ?', [repo]):
            children.setdefault(parent, []).append(child)
        referrers: dict[str, list[str]] = {}
        for digest, (_, subject) in found.items():
            if subject:
                referrers.setdefault(subject, []).append(digest)
        todo = list(keep)
        while todo:
            digest = todo.pop()
            for nxt in children.get(digest, []) + referrers.get(digest, []):
                if nxt in found and nxt not in keep:
                    keep.add(nxt)
                    todo.append(nxt)
        doomed += [(repo, d) for d, (created, _) in found.items()
                   if d not in keep and created < cutoff]
    return doomed


def _orphan_files(registry: Registry, cutoff: float, *, delete: bool
                  ) -> tuple[list[str], int]:
    """Files in blobs/ without a row (a crash between commit and link), old enough."""
    known = {d for (d,) in registry.meta.db.execute('SELECT digest FROM blobs')}
    found: list[str] = []
    freed = 0
    for path, digest in registry.store.walk():
        if digest in known:
            continue
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        if st.st_mtime >= cutoff:
            continue
        found.append(digest)
        freed += st.st_size
        if delete:
            path.unlink(missing_ok=True)
    return found, freed


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


def fsck(registry: Registry, *, repair: bool = False,
         progress: Progress | None = None) -> list[Problem]:
    """Re-hash every blob file, check every manifest and its references.

    Serious problems (corrupt or missing content) make fsck fail; with ``repair``
    the corrupt content is moved to ``<root>/quarantine/`` and its rows removed, so
    clients get 404 and can push again. Notices (references to content deleted
    through the API, orphan files) are reported but do not fail.
    """
    problems: list[Problem] = []
    db = registry.meta.db
    files = list(registry.store.walk())
    intact: dict[str, int] = {}
    for i, (path, digest) in enumerate(files, 1):
        if progress:
            progress('hashing blobs', i, len(files))
        algorithm, _, encoded = digest.partition(':')
        if registry.store.hash_file(path, algorithm) == encoded:
            intact[digest] = path.stat().st_size
            continue
        problems.append(Problem('blob-corrupt', digest,
                                f'{path} does not hash to its name'))
        if repair:
            _quarantine(registry, path, Digest.parse(digest))
            _forget_blob(registry, digest)
    corrupt = {p.subject for p in problems}
    for digest, size in list(db.execute('SELECT digest, size FROM blobs')):
        if digest in corrupt:
            continue
        if digest not in intact:
            problems.append(Problem('blob-missing', digest, 'no file for a stored blob'))
            if repair:
                _forget_blob(registry, digest)
        elif intact[digest] != size:
            problems.append(Problem('blob-size', digest,
                                    f'file has {intact[digest]} bytes, recorded {size}'))
    known = {d for (d,) in db.execute('SELECT digest FROM blobs')}
    problems += [Problem('file-orphan', d, 'file without a blob row (gc removes it)',
                         serious=False) for d in intact if d not in known]
    for repo, digest, content in list(db.execute(
            'SELECT repo, digest, content FROM manifests')):
        d = Digest.parse(digest)
        if hashlib.new(d.algorithm, content).hexdigest() == d.encoded:
            continue
        problems.append(Problem('manifest-corrupt', f'{repo}@{digest}',
                                'stored bytes do not hash to the digest'))
        if repair:
            qdir = registry.root / 'quarantine' / 'manifests'
            qdir.mkdir(parents=True, exist_ok=True)
            (qdir / f'{repo.replace("/", "_")}@{digest}').write_bytes(content)
            registry.meta.delete_manifest(repo, digest)
    for repo, digest, child in db.execute(
            'SELECT r.repo, r.digest, r.child FROM manifest_refs r WHERE NOT EXISTS '
            '(SELECT 1 FROM repo_blobs l WHERE l.repo = r.repo AND l.digest = r.child) '
            'AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.repo = r.repo '
            'AND m.digest = r.child)'):
        problems.append(Problem('reference-missing', f'{repo}@{digest}',
                                f'references {child}, which is not in {repo} '
                                '(absent: a sparse manifest, deleted through the API, '
                                'or lost)', serious=False))
    return problems


def _forget_blob(registry: Registry, digest: str) -> None:
    with registry.meta.immediate():
        registry.meta.db.execute('DELETE FROM repo_blobs WHERE digest = ?', [digest])
        registry.meta.db.execute('DELETE FROM blobs WHERE digest = ?', [digest])


def _quarantine(registry: Registry, path: Path, digest: Digest) -> None:
    target = registry.root / 'quarantine' / digest.algorithm / digest.encoded
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(path), target)


__all__ = ['GCReport', 'Problem', 'collect', 'fsck']
