"""Garbage collection (``oci_ref.gc.collect``) and integrity checks (``fsck``) on a real
Registry in a temporary root, filled through the in-process app sharing that Registry.

"Old" content is made old by moving its timestamps back (rows' ``created_at``, files'
mtime), so each test can mix content on both sides of the grace period. Every test
runs on each store combination (the ``backend`` fixture).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from oci_ref.app import create_app
from oci_ref.gc import GCReport, Problem
from oci_ref.gc import collect as collect_async
from oci_ref.gc import fsck as fsck_async
from oci_ref.reference import Digest
from oci_ref.registry import GC_LOCK, Registry
from tests.backends import Backend
from tests.support import (
    OCI_INDEX,
    OCI_MANIFEST,
    InProcess,
    assert_error,
    descriptor,
    digest,
    image_manifest,
    push_blob,
)

HOUR = 3600


@pytest.fixture
def reg(backend: Backend) -> Iterator[Registry]:
    r = backend.registry()
    yield r
    r.close()


@pytest.fixture
def c(backend: Backend, reg: Registry) -> InProcess:
    return InProcess(create_app(backend.config(), registry=reg))


def collect(reg: Registry, **kw: Any) -> GCReport | None:
    return asyncio.run(collect_async(reg, **kw))


def fsck(reg: Registry, **kw: Any) -> list[Problem]:
    return asyncio.run(fsck_async(reg, **kw))


# -- helpers -------------------------------------------------------------------------


def put_manifest(c: InProcess, repo: str, ref: str, body: bytes,
                 media_type: str = OCI_MANIFEST) -> str:
    r = c.put(f'/v2/{repo}/manifests/{ref}', content=body,
              headers={'Content-Type': media_type})
    assert r.status_code == 201, r.content
    return digest(body)


class Image:
    """An image pushed into ``repo``: its manifest digest and body, and its blobs."""

    def __init__(self, c: InProcess, repo: str, ref: str, seed: str, **extra: Any):
        self.config = json.dumps({'seed': seed, 'os': 'linux'}).encode()
        self.layer = f'layer bytes of {seed}'.encode()
        self.config_digest = push_blob(c, repo, self.config)
        self.layer_digest = push_blob(c, repo, self.layer)
        self.body = image_manifest(self.config, [self.layer], **extra)
        self.digest = put_manifest(c, repo, ref, self.body)
        self.blobs = [self.config_digest, self.layer_digest]

    def subject(self) -> dict[str, Any]:
        return descriptor(OCI_MANIFEST, self.body)


def push_index(c: InProcess, repo: str, ref: str, children: list[Image]) -> str:
    body = json.dumps({
        'schemaVersion': 2, 'mediaType': OCI_INDEX,
        'manifests': [descriptor(OCI_MANIFEST, i.body) for i in children],
    }).encode()
    return put_manifest(c, repo, ref, body, OCI_INDEX)


def blob_file(backend: Backend, d: str) -> Path:
    return backend.blob_path(d)


def has_blob(c: InProcess, reg: Registry, repo: str, d: str) -> bool:
    """The blob is served (row and file); asserting the two never disagree."""
    r = c.get(f'/v2/{repo}/blobs/{d}')
    served = r.status_code == 200
    if not served:
        assert_error(r, 404, 'BLOB_UNKNOWN')
    row = asyncio.run(reg.meta.blob_size(repo, d)) is not None
    assert served == row, (d, r.status_code, row)
    if served:
        assert asyncio.run(reg.blobs.exists(Digest.parse(d))), \
            f'{d} is linked but its file is gone'
    return served


def has_manifest(c: InProcess, repo: str, d: str) -> bool:
    r = c.get(f'/v2/{repo}/manifests/{d}')
    if r.status_code != 200:
        # NAME_UNKNOWN once gc removed the repository with its last manifest.
        assert r.status_code == 404
        assert r.json()['errors'][0]['code'] in ('MANIFEST_UNKNOWN', 'NAME_UNKNOWN')
    return r.status_code == 200


def snapshot(backend: Backend) -> dict[str, Any]:
    with backend.db() as db:
        rows = {t: sorted(db.execute(f'SELECT * FROM {t}').fetchall())
                for t in ('blobs', 'repo_blobs', 'manifests', 'manifest_refs', 'tags')}
    return {**rows, 'files': backend.blob_files()}


def write_orphan(backend: Backend, data: bytes) -> tuple[str, Path]:
    """A content file with no row (what a crash between file and row leaves)."""
    d = digest(data)
    path = blob_file(backend, d)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return d, path


def age(backend: Backend, seconds: float = 2 * HOUR) -> None:
    backend.age(seconds)


# -- blobs ----------------------------------------------------------------------------


def test_removes_blobs_no_manifest_references_and_keeps_referenced_ones(backend, c, reg):
    img = Image(c, 'a/b', 'v1', 'kept')
    stray = push_blob(c, 'a/b', b'nobody references me' * 10)
    report = collect(reg, grace=0)
    assert report is not None
    assert report.blobs == [stray]
    assert report.links == [('a/b', stray)]
    assert report.manifests == [] and report.orphan_files == []
    assert report.bytes_freed == len(b'nobody references me' * 10)
    assert not blob_file(backend, stray).exists()
    assert not has_blob(c, reg, 'a/b', stray)
    for d in img.blobs:
        assert has_blob(c, reg, 'a/b', d)
    assert c.get('/v2/a/b/manifests/v1').content == img.body


def test_removes_a_link_its_repository_does_not_use_but_keeps_the_shared_blob(c, reg):
    img = Image(c, 'a/used', 'v1', 'shared')
    # The same layer pushed into a second repository, which no manifest there uses.
    push_blob(c, 'a/unused', img.layer)
    report = collect(reg, grace=0)
    assert report is not None
    assert report.links == [('a/unused', img.layer_digest)]
    assert report.blobs == [] and report.bytes_freed == 0
    assert not has_blob(c, reg, 'a/unused', img.layer_digest)
    assert has_blob(c, reg, 'a/used', img.layer_digest)


def test_blob_deleted_through_the_api_is_freed_once_no_repository_links_it(backend, c, reg):
    d = push_blob(c, 'a/b', b'delete me')
    assert c.delete(f'/v2/a/b/blobs/{d}').status_code == 202
    # The API removes the link at once; the file stays until a collection.
    assert blob_file(backend, d).is_file()
    report = collect(reg, grace=0)
    assert report is not None
    assert report.links == [] and report.blobs == [d]
    assert not blob_file(backend, d).exists()
    assert d not in asyncio.run(reg.meta.blob_sizes())


def test_a_collected_blob_can_be_pushed_again(backend, c, reg):
    d = push_blob(c, 'a/b', b'come back')
    report = collect(reg, grace=0)
    assert report is not None and report.blobs == [d]
    assert push_blob(c, 'a/b', b'come back') == d
    assert c.get(f'/v2/a/b/blobs/{d}').content == b'come back'
    assert blob_file(backend, d).read_bytes() == b'come back'


# -- grace ----------------------------------------------------------------------------


def test_never_removes_content_younger_than_the_grace_period(backend, c, reg):
    old_blob = push_blob(c, 'a/b', b'old stray')
    old = Image(c, 'a/b', 'old', 'old')
    assert c.delete('/v2/a/b/manifests/old').status_code == 202  # untag: unreachable
    old_orphan, _ = write_orphan(backend, b'old orphan file')
    age(backend)
    new_blob = push_blob(c, 'a/b', b'new stray')
    new = Image(c, 'a/b', 'new', 'new')
    assert c.delete('/v2/a/b/manifests/new').status_code == 202
    _, new_orphan_path = write_orphan(backend, b'new orphan file')

    report = collect(reg, untagged=True, grace=HOUR)
    assert report is not None
    assert report.manifests == [('a/b', old.digest)]
    assert sorted(report.blobs) == sorted([old_blob, *old.blobs])
    assert report.orphan_files == [old_orphan]
    assert has_manifest(c, 'a/b', new.digest)
    for d in [new_blob, *new.blobs]:
        assert has_blob(c, reg, 'a/b', d)
    assert new_orphan_path.is_file()
    # And a large grace keeps everything, old content included.
    before = snapshot(backend)
    report = collect(reg, untagged=True, grace=10 * HOUR)
    assert report is not None
    assert (report.manifests, report.links, report.blobs, report.orphan_files) == (
        [], [], [], [])
    assert snapshot(backend) == before


def test_pushing_or_mounting_a_blob_again_restarts_its_grace_period(backend, c, reg):
    pushed = push_blob(c, 'a/b', b'pushed twice')
    mounted = push_blob(c, 'a/b', b'mounted later')
    age(backend)
    assert push_blob(c, 'a/b', b'pushed twice') == pushed
    r = c.post(f'/v2/a/b/blobs/uploads/?mount={mounted}&from=a/b')
    assert r.status_code == 201, r.content
    report = collect(reg, grace=HOUR)
    assert report is not None
    assert report.links == [] and report.blobs == []
    assert has_blob(c, reg, 'a/b', pushed) and has_blob(c, reg, 'a/b', mounted)


# -- untagged manifests ---------------------------------------------------------------


def test_without_untagged_keeps_untagged_manifests_and_their_blobs(c, reg):
    img = Image(c, 'a/b', 'v1', 'untag me')
    assert c.delete('/v2/a/b/manifests/v1').status_code == 202
    report = collect(reg, grace=0)
    assert report is not None
    assert report.manifests == [] and report.blobs == [] and report.links == []
    assert has_manifest(c, 'a/b', img.digest)
    for d in img.blobs:
        assert has_blob(c, reg, 'a/b', d)


def test_untagged_removes_manifests_no_tag_reaches_and_then_their_blobs(c, reg):
    tagged = Image(c, 'a/b', 'v1', 'tagged')
    untagged = Image(c, 'a/b', 'tmp', 'untagged')
    assert c.delete('/v2/a/b/manifests/tmp').status_code == 202
    report = collect(reg, untagged=True, grace=0)
    assert report is not None
    assert report.manifests == [('a/b', untagged.digest)]
    assert sorted(report.blobs) == sorted(untagged.blobs)
    assert not has_manifest(c, 'a/b', untagged.digest)
    for d in untagged.blobs:
        assert not has_blob(c, reg, 'a/b', d)
    assert has_manifest(c, 'a/b', tagged.digest)
    for d in tagged.blobs:
        assert has_blob(c, reg, 'a/b', d)


def test_untagged_removes_a_manifest_pushed_by_digest_only(c, reg):
    config, layer = b'{"by": "digest"}', b'layer by digest'
    push_blob(c, 'a/b', config)
    push_blob(c, 'a/b', layer)
    body = image_manifest(config, [layer])
    d = put_manifest(c, 'a/b', digest(body), body)
    report = collect(reg, untagged=True, grace=0)
    assert report is not None
    assert report.manifests == [('a/b', d)]
    assert sorted(report.blobs) == sorted([digest(config), digest(layer)])
    assert not has_manifest(c, 'a/b', d)


def test_untagged_keeps_the_children_of_a_tagged_index(c, reg):
    amd = Image(c, 'a/b', 'amd64-build', 'amd64')
    arm = Image(c, 'a/b', 'arm64-build', 'arm64')
    index = push_index(c, 'a/b', 'multi', [amd, arm])
    # The children lose their own tags: only the index reaches them now.
    for tag in ('amd64-build', 'arm64-build'):
        assert c.delete(f'/v2/a/b/manifests/{tag}').status_code == 202
    report = collect(reg, untagged=True, grace=0)
    assert report is not None
    assert report.manifests == [] and report.blobs == [] and report.links == []
    assert has_manifest(c, 'a/b', index)
    for img in (amd, arm):
        assert has_manifest(c, 'a/b', img.digest)
        for d in img.blobs:
            assert has_blob(c, reg, 'a/b', d)


def test_untagged_removes_an_untagged_index_with_the_children_only_it_reached(c, reg):
    only_child = Image(c, 'a/b', 'child-1', 'only child')
    shared = Image(c, 'a/b', 'shared', 'shared child')
    index = push_index(c, 'a/b', 'idx', [only_child, shared])
    for tag in ('idx', 'child-1'):
        assert c.delete(f'/v2/a/b/manifests/{tag}').status_code == 202
    report = collect(reg, untagged=True, grace=0)
    assert report is not None
    assert sorted(report.manifests) == sorted([('a/b', index), ('a/b', only_child.digest)])
    assert sorted(report.blobs) == sorted(only_child.blobs)
    assert not has_manifest(c, 'a/b', index)
    assert not has_manifest(c, 'a/b', only_child.digest)
    assert has_manifest(c, 'a/b', shared.digest)  # still tagged itself
    for d in shared.blobs:
        assert has_blob(c, reg, 'a/b', d)


def test_untagged_keeps_referrers_of_kept_manifests_transitively(c, reg):
    img = Image(c, 'a/b', 'v1', 'subject')
    sbom = Image(c, 'a/b', 'sbom-tmp', 'sbom', subject=img.subject(),
                 artifactType='application/vnd.example.sbom')
    sig = Image(c, 'a/b', 'sig-tmp', 'signature of the sbom', subject=sbom.subject(),
                artifactType='application/vnd.example.sig')
    for tag in ('sbom-tmp', 'sig-tmp'):
        assert c.delete(f'/v2/a/b/manifests/{tag}').status_code == 202
    report = collect(reg, untagged=True, grace=0)
    assert report is not None
    assert report.manifests == [] and report.blobs == []
    for m in (img, sbom, sig):
        assert has_manifest(c, 'a/b', m.digest)
        for d in m.blobs:
            assert has_blob(c, reg, 'a/b', d)
    listed = c.get(f'/v2/a/b/referrers/{img.digest}').json()['manifests']
    assert [m['digest'] for m in listed] == [sbom.digest]


def test_untagged_removes_the_orphaned_referrers_of_a_removed_manifest(c, reg):
    kept = Image(c, 'a/b', 'v1', 'kept')
    doomed = Image(c, 'a/b', 'v2', 'doomed')
    sig = Image(c, 'a/b', 'sig-tmp', 'sig of doomed', subject=doomed.subject(),
                artifactType='application/vnd.example.sig')
    countersig = Image(c, 'a/b', 'csig-tmp', 'sig of sig', subject=sig.subject(),
                       artifactType='application/vnd.example.sig')
    for tag in ('v2', 'sig-tmp', 'csig-tmp'):
        assert c.delete(f'/v2/a/b/manifests/{tag}').status_code == 202
    report = collect(reg, untagged=True, grace=0)
    assert report is not None
    assert sorted(report.manifests) == sorted(
        ('a/b', m.digest) for m in (doomed, sig, countersig))
    assert sorted(report.blobs) == sorted(
        d for m in (doomed, sig, countersig) for d in m.blobs)
    for m in (doomed, sig, countersig):
        assert not has_manifest(c, 'a/b', m.digest)
    assert c.get(f'/v2/a/b/referrers/{doomed.digest}').json()['manifests'] == []
    assert has_manifest(c, 'a/b', kept.digest)


def test_untagged_is_per_repository(c, reg):
    """A tag in one repository does not keep the same manifest in another."""
    tagged = Image(c, 'a/one', 'v1', 'same')
    again = Image(c, 'a/two', 'v1', 'same')
    assert again.digest == tagged.digest
    assert c.delete('/v2/a/two/manifests/v1').status_code == 202
    report = collect(reg, untagged=True, grace=0)
    assert report is not None
    assert report.manifests == [('a/two', tagged.digest)]
    assert sorted(report.links) == sorted(('a/two', d) for d in tagged.blobs)
    assert report.blobs == []  # a/one still links them
    assert has_manifest(c, 'a/one', tagged.digest)
    assert not has_manifest(c, 'a/two', tagged.digest)
    for d in tagged.blobs:
        assert has_blob(c, reg, 'a/one', d)
        assert not has_blob(c, reg, 'a/two', d)


# -- dry run, orphan files, report, lock ---------------------------------------------


def test_dry_run_removes_nothing_and_reports_what_the_real_run_then_removes(
        backend, c, reg):
    Image(c, 'a/b', 'v1', 'kept')
    Image(c, 'a/b', 'gone', 'doomed')
    assert c.delete('/v2/a/b/manifests/gone').status_code == 202
    push_blob(c, 'a/b', b'stray' * 1000)
    img = Image(c, 'a/other', 'v1', 'x')
    push_blob(c, 'a/unused', img.layer)
    _, orphan_path = write_orphan(backend, b'orphan file')
    age(backend)
    before = snapshot(backend)

    dry = collect(reg, untagged=True, grace=HOUR, dry_run=True)
    assert dry is not None and dry.dry_run
    assert snapshot(backend) == before
    assert orphan_path.is_file()
    assert dry.manifests and dry.links and dry.blobs and dry.orphan_files
    assert dry.summary().startswith('would remove 1 manifests, ')

    real = collect(reg, untagged=True, grace=HOUR)
    assert real is not None and not real.dry_run
    for field in ('manifests', 'links', 'blobs', 'orphan_files'):
        assert sorted(getattr(real, field)) == sorted(getattr(dry, field)), field
    assert real.bytes_freed == dry.bytes_freed > 5000
    assert real.summary() == dry.summary().replace('would remove', 'removed')
    assert snapshot(backend) != before
    assert not orphan_path.exists()
    # Nothing is left for a second pass.
    again = collect(reg, untagged=True, grace=HOUR)
    assert again is not None
    assert (again.manifests, again.links, again.blobs, again.orphan_files) == (
        [], [], [], [])


def test_orphan_files_without_a_row_are_removed_once_older_than_grace(backend, c, reg):
    old, old_path = write_orphan(backend, b'old orphan' * 100)
    backend.age_blob(old, 2 * HOUR)
    young, young_path = write_orphan(backend, b'young orphan')
    not_content = old_path.parent / 'not-a-digest'
    not_content.write_bytes(b'x')
    report = collect(reg, grace=HOUR)
    assert report is not None
    assert report.orphan_files == [old]
    assert report.blobs == []
    assert report.bytes_freed == 1000
    assert not old_path.exists()
    assert young_path.is_file()
    # Files that are not content (wrong name) are left alone.
    assert not_content.is_file()
    assert young in set(backend.blob_files())


def test_summary_says_what_was_freed(c, reg):
    big = os.urandom(3 * 2**20 // 2)  # 1.5 MiB
    d = push_blob(c, 'a/b', big)
    report = collect(reg, grace=0)
    assert report is not None and report.blobs == [d]
    assert report.bytes_freed == len(big)
    assert report.summary() == ('removed 0 manifests, 1 blob links, 1 blobs (1.5 MiB), '
                                '1 empty repositories')
    assert report.kept() is None


def test_a_pass_right_after_a_delete_says_what_the_grace_period_kept_and_why(c, reg):
    img = Image(c, 'a/b', 'v1', 'deleted just now')
    assert c.delete(f'/v2/a/b/manifests/{img.digest}').status_code == 202
    report = collect(reg, untagged=True, grace=HOUR)
    assert report is not None
    assert report.summary() == 'removed 0 manifests, 0 blob links, 0 blobs (0.0 MiB)'
    assert sorted(report.young_links) == sorted(('a/b', d) for d in img.blobs)
    assert report.kept() == ('kept 2 unreferenced blob links younger than the grace '
                             'period (3600 s); they go in a later pass, or now with '
                             '--grace 0')
    assert has_blob(c, reg, 'a/b', img.layer_digest)


def test_repositories_left_with_nothing_are_removed_and_leave_the_catalog(c, reg):
    Image(c, 'keep/app', 'v1', 'kept')
    gone = Image(c, 'gone/app', 'v1', 'emptied')
    assert c.delete(f'/v2/gone/app/manifests/{gone.digest}').status_code == 202
    for d in gone.blobs:
        assert c.delete(f'/v2/gone/app/blobs/{d}').status_code == 202
    assert c.get('/v2/_catalog').json()['repositories'] == ['gone/app', 'keep/app']
    report = collect(reg, grace=HOUR)
    assert report is not None and report.repositories == ['gone/app']
    assert c.get('/v2/_catalog').json()['repositories'] == ['keep/app']
    assert_error(c.get('/v2/gone/app/tags/list'), 404, 'NAME_UNKNOWN')


def test_collect_returns_none_while_another_collection_holds_the_lock(c, reg):
    d = push_blob(c, 'a/b', b'stray')
    async def while_held() -> None:
        async with reg.meta.lock(GC_LOCK, exclusive=True, wait=False) as locked:
            assert locked
            assert await collect_async(reg, grace=0) is None

    asyncio.run(while_held())
    assert has_blob(c, reg, 'a/b', d)
    report = collect(reg, grace=0)
    assert report is not None and report.blobs == [d]


def test_collect_waits_for_no_one_while_a_blob_commit_holds_the_lock_shared(c, reg):
    """A commit in progress (shared lock) makes a pass give up, not interleave."""
    d = push_blob(c, 'a/b', b'stray')
    async def while_held() -> None:
        async with reg.meta.lock(GC_LOCK, exclusive=False, wait=False) as locked:
            assert locked
            started = time.monotonic()
            assert await collect_async(reg, grace=0) is None
            assert time.monotonic() - started < 5

    asyncio.run(while_held())
    assert has_blob(c, reg, 'a/b', d)


# -- fsck ------------------------------------------------------------------------------


def test_fsck_finds_nothing_in_a_clean_store(c, reg):
    Image(c, 'a/b', 'v1', 'clean')
    assert fsck(reg) == []


def test_fsck_reports_a_corrupt_manifest_and_repair_quarantines_it(backend, c, reg):
    img = Image(c, 'a/b', 'v1', 'corrupt manifest')
    corrupt = img.body.replace(b'schemaVersion', b'schemaVersiom')
    assert corrupt != img.body
    with backend.db() as db:
        db.execute('UPDATE manifests SET content = ? WHERE digest = ?',
                            [corrupt, img.digest])
    problems = fsck(reg)
    assert [(p.kind, p.subject, p.serious) for p in problems] == [
        ('manifest-corrupt', f'a/b@{img.digest}', True)]
    assert has_manifest(c, 'a/b', img.digest)
    fsck(reg, repair=True)
    assert not has_manifest(c, 'a/b', img.digest)
    quarantined = backend.quarantined_manifest(f'a_b@{img.digest}')
    assert quarantined.read_bytes() == corrupt


def test_fsck_notices_a_reference_to_a_blob_deleted_through_the_api(c, reg):
    img = Image(c, 'a/b', 'v1', 'dangling by api')
    assert c.delete(f'/v2/a/b/blobs/{img.layer_digest}').status_code == 202
    problems = fsck(reg)
    assert [(p.kind, p.serious) for p in problems] == [('reference-missing', False)]
    assert img.layer_digest in problems[0].detail


def test_fsck_reports_a_file_whose_size_differs_from_its_row(backend, c, reg):
    d = push_blob(c, 'a/b', b'sized')
    with backend.db() as db:
        db.execute('UPDATE blobs SET size = 99 WHERE digest = ?', [d])
    problems = fsck(reg)
    assert [(p.kind, p.subject, p.serious) for p in problems] == [('blob-size', d, True)]
