"""The copier of ``oci-ref migrate`` (oci_ref/migrate.py), without a server: a
single-node source (SQLite + filesystem) filled through the in-process app, copied
into each store combination (the ``backend`` fixture), read back through the app.
The command itself, on real PostgreSQL and S3 with real servers, is
tests/e2e/test_migrate.py."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from oci_ref.app import create_app
from oci_ref.config import Config
from oci_ref.gc import collect, fsck
from oci_ref.migrate import MIGRATE_LOCK, Dating, Migration, MigrationReport
from oci_ref.progress import Progress
from oci_ref.reference import Digest
from oci_ref.registry import Policy, Registry
from oci_ref.storage import open_stores
from oci_ref.storage.interfaces import Stores, StoreUnavailable
from tests.backends import Backend
from tests.migration_content import Sample, push_sample, view
from tests.support import (
    OCI_INDEX,
    OCI_MANIFEST,
    InProcess,
    descriptor,
    digest,
    image_manifest,
    push_blob,
)


class Side:
    """One registry: its stores, and the app over them."""

    def __init__(self, config: Config, clock: Any = None):
        kw = {'clock': clock} if clock is not None else {}
        self.stores = open_stores(config, **kw)
        self.registry = Registry(self.stores.blobs, self.stores.meta,
                                 policy=Policy.from_config(config))
        self.c = InProcess(create_app(config, registry=self.registry))

    def close(self) -> None:
        self.registry.close()


@pytest.fixture
def source(tmp_path: Path) -> Iterator[Side]:
    side = Side(Config(root=tmp_path / 'source', fsync=False))
    yield side
    side.close()


@pytest.fixture
def sample(source: Side) -> Sample:
    return push_sample(source.c)


@pytest.fixture
def dating() -> Dating:
    return Dating()


@pytest.fixture
def target(backend: Backend, dating: Dating) -> Iterator[Side]:
    side = Side(backend.config(), clock=dating)
    yield side
    side.close()


def migrate(source: Side, target: Side, dating: Dating, **kw: Any) -> MigrationReport:
    report = asyncio.run(Migration(source.stores, target.stores, dating, **kw).run())
    assert report is not None
    return report


def counts(report: MigrationReport) -> dict[str, int]:
    return {k: v for k, v in vars(report).items() if isinstance(v, int)}


def test_everything_is_carried_over_and_reads_back_the_same(source, sample, target,
                                                             dating):
    report = migrate(source, target, dating)
    assert report.failures == [] and report.conflicts == []
    blobs = {d for ds in sample.blobs.values() for d in ds}
    links = sum(len(set(ds)) for ds in sample.blobs.values())
    assert counts(report) == {
        'blobs_copied': len(blobs), 'bytes_copied': report.bytes_copied,
        'blobs_present': 0, 'links_made': links, 'links_present': 0,
        'manifests_copied': 6, 'manifests_present': 0, 'manifests_sparse': 0,
        'referrers': 1, 'tags_set': 5, 'tags_present': 0, 'repositories': 3,
        'upload_sessions': 0, 'keys_copied': 0, 'keys_present': 0, 'keys_kept': 0,
        'cache_uses_copied': 0}
    assert report.bytes_copied > 256 * 1024
    assert view(target.c, sample) == view(source.c, sample)
    assert asyncio.run(fsck(target.registry)) == []


def test_push_times_are_kept(source, sample, target, dating):
    migrate(source, target, dating)

    async def times(stores: Stores) -> dict[str, float]:
        out = {}
        for repo, digests in sample.manifests.items():
            for d in digests:
                at = await stores.meta.manifest_pushed_at(repo, d)
                assert at is not None
                out[f'{repo}@{d}'] = at
            for t in await stores.meta.tag_details(repo, by_pushed=True, descending=False,
                                                   offset=0, limit=100):
                out[f'{repo}:{t.tag}'] = t.pushed_at
        return out

    before = asyncio.run(times(source.stores))
    assert asyncio.run(times(target.stores)) == pytest.approx(before)
    assert len(set(before.values())) > 1  # not all one time: the check means something


def test_a_second_run_changes_nothing(source, sample, target, dating):
    first = migrate(source, target, dating)
    again = migrate(source, target, dating)
    assert again.failures == [] and again.conflicts == []
    assert counts(again) == {
        **{k: 0 for k in counts(first)},
        'blobs_present': first.blobs_copied, 'links_present': first.links_made,
        'manifests_present': first.manifests_copied, 'referrers': 1,
        'tags_present': first.tags_set, 'repositories': 3}
    assert view(target.c, sample) == view(source.c, sample)


def test_last_uses_of_cached_manifests_are_carried_over(source, sample, target,
                                                        dating):
    """Eviction's least-recently-used order: the source's last uses go to the
    target; a later use the target recorded itself stays; a use of a manifest the
    target does not hold is not carried; a second run copies only what is newer."""
    (one, two) = [(repo, d) for repo, ds in sorted(sample.manifests.items())
                  for d in ds][:2]
    orphan = ('up/gone', digest(b'evicted meanwhile'))

    def touch(side: Side, uses: dict[tuple[str, str], float]) -> None:
        async def run() -> None:
            for (repo, d), at in uses.items():
                await side.stores.meta.touch_cached(repo, d, at)
        asyncio.run(run())

    def uses(side: Side) -> dict[tuple[str, str], float]:
        found = asyncio.run(side.stores.meta.cache_uses())
        return {(r, d): at for r, d, at in found}

    touch(source, {one: 100.0, two: 200.0, orphan: 300.0})
    assert migrate(source, target, dating).cache_uses_copied == 2
    assert uses(target) == {one: 100.0, two: 200.0}
    touch(target, {one: 500.0})  # served by the target since
    touch(source, {one: 400.0, two: 250.0})
    report = migrate(source, target, dating)
    assert report.cache_uses_copied == 1
    assert "cached manifests' last uses (eviction order): 1 copied" in report.summary()
    assert uses(target) == {one: 500.0, two: 250.0}


def test_a_corrupt_source_blob_is_reported_and_not_copied(tmp_path, source, sample,
                                                          target, dating):
    layer = sample.blobs['lib/db'][1]  # also linked in app/web (arm64's layer)
    d = Digest.parse(layer)
    path = tmp_path / 'source' / 'blobs' / 'sha256' / d.encoded[:2] / d.encoded
    path.write_bytes(b'X' * path.stat().st_size)
    report = migrate(source, target, dating)
    assert len(report.failures) == 4, report.failures
    assert report.failures[0].startswith(f'blob {layer}: corrupt in the source')
    # The images using it and the index over arm64 are not copied; the rest is.
    assert any('lib/db@' in f for f in report.failures)
    assert not asyncio.run(target.stores.blobs.exists(d))
    assert target.c.get(f'/v2/lib/db/blobs/{layer}').status_code == 404
    assert target.c.get('/v2/lib/db/manifests/1.0').status_code == 404
    assert target.c.get('/v2/app/web/manifests/v1').status_code == 404
    assert target.c.get('/v2/app/web/manifests/amd64').status_code == 200
    assert asyncio.run(fsck(target.registry)) == []


def test_a_missing_source_blob_is_reported_an_unlinked_one_skipped(tmp_path, source,
                                                                   sample, target,
                                                                   dating):
    gone = sample.blobs['lib/only-blobs'][0]
    d = Digest.parse(gone)
    (tmp_path / 'source' / 'blobs' / 'sha256' / d.encoded[:2] / d.encoded).unlink()
    report = migrate(source, target, dating)
    assert report.failures == [f'blob {gone}: missing in the source; not copied']
    # Unlinked through the API (GC's to remove from the source): not copied, and
    # nothing to report.
    assert source.c.delete(f'/v2/lib/only-blobs/blobs/{gone}').status_code == 202
    assert migrate(source, target, dating).ok


def test_verify_existing_finds_a_corrupt_copy_in_the_target(backend, source, sample,
                                                             target, dating):
    assert migrate(source, target, dating).ok
    layer = sample.blobs['lib/db'][1]
    path = backend.blob_path(layer)
    path.write_bytes(b'Y' * len(path.read_bytes()))
    assert migrate(source, target, dating).ok  # skipped by digest and size
    report = migrate(source, target, dating, verify_existing=True)
    assert len(report.failures) == 1
    assert report.failures[0].startswith(f'blob {layer}: corrupt in the target')
    blobs = {d for ds in sample.blobs.values() for d in ds}
    assert report.blobs_present == len(blobs) - 1  # the others: re-hashed, good


def test_a_tag_the_target_points_elsewhere_is_kept_unless_told(source, sample, target,
                                                               dating):
    other = image_manifest(b'{"other": 1}', [b'other layer'])
    push_blob(target.c, 'lib/db', b'{"other": 1}')
    push_blob(target.c, 'lib/db', b'other layer')
    r = target.c.put('/v2/lib/db/manifests/1.0', content=other,
                     headers={'Content-Type': 'application/vnd.oci.image.manifest.v1+json'})
    assert r.status_code == 201
    report = migrate(source, target, dating)
    assert report.failures == []
    assert report.conflicts == [
        f"tag lib/db:1.0: the target points it at {digest(other)}, the source at "
        f"{sample.tags['lib/db']['1.0']}; kept the target's (--overwrite-tags to "
        'replace it)']
    assert target.c.get('/v2/lib/db/manifests/1.0').content == other
    report = migrate(source, target, dating, overwrite_tags=True)
    assert report.ok and report.tags_set == 1
    assert digest(target.c.get('/v2/lib/db/manifests/1.0').content) == \
        sample.tags['lib/db']['1.0']


def test_what_a_killed_run_left_behind_is_finished(source, sample, target, dating):
    """A spool half written under the migration's name, and a blob committed but not
    yet linked: the next run cleans the one and links the other."""
    layer = sample.blobs['app/web'][1]
    d = Digest.parse(layer)
    spool = f'tmp-migrate-{d.algorithm}-{d.encoded[:48]}'

    async def leftovers() -> None:
        blobs = target.stores.blobs
        data = b''.join([chunk async for chunk in await source.stores.blobs.reader(d)])
        half = data[:len(data) // 2]

        async def body() -> Any:
            yield half

        await blobs.create_spool(spool)
        await blobs.append(spool, 0, body(), [d.hasher()])
        config = Digest.parse(sample.blobs['lib/only-blobs'][0])
        data = b''.join([c async for c in await source.stores.blobs.reader(config)])

        async def whole() -> Any:
            yield data

        await blobs.create_spool('tmp-other')
        await blobs.append('tmp-other', 0, whole(), [config.hasher()])
        await blobs.commit('tmp-other', config)

    asyncio.run(leftovers())
    report = migrate(source, target, dating)
    assert report.ok, report.failures
    assert report.blobs_present == 1  # the committed one, linked now
    assert spool not in [s.id for s in asyncio.run(target.stores.blobs.spools())]
    assert view(target.c, sample) == view(source.c, sample)
    assert asyncio.run(fsck(target.registry)) == []


def test_a_second_migration_into_the_same_target_is_refused(source, sample, target,
                                                            dating):
    async def run() -> MigrationReport | None:
        async with target.stores.meta.lock(MIGRATE_LOCK, exclusive=True,
                                           wait=False) as held:
            assert held is not None
            return await Migration(source.stores, target.stores, dating).run()

    assert asyncio.run(run()) is None
    assert target.c.get('/v2/app/web/manifests/v1').status_code == 404


def test_open_upload_sessions_are_counted_not_migrated(source, target, dating):
    r = source.c.post('/v2/app/web/blobs/uploads/')
    assert r.status_code == 202
    report = migrate(source, target, dating)
    assert report.upload_sessions == 1
    assert 'upload sessions in progress: 1 not migrated' in '\n'.join(report.summary())
    assert asyncio.run(target.stores.meta.upload_ids()) == set()


def test_manifests_the_source_holds_without_their_content_stay_so(tmp_path, target,
                                                                    dating):
    """A sparse index (sparse_manifests, or the pull-through cache's), a manifest the
    validator refuses (cached as an upstream sent it), a manifest whose bytes no
    longer match its digest (reported)."""
    source = Side(Config(root=tmp_path / 'sparse', fsync=False, sparse_manifests=True))
    try:
        child = image_manifest(b'{"absent": 1}', [b'absent layer'])
        index = json.dumps({'schemaVersion': 2, 'mediaType': OCI_INDEX,
                            'manifests': [descriptor(OCI_MANIFEST, child)]}).encode()
        r = source.c.put('/v2/cache/app/manifests/v1', content=index,
                         headers={'Content-Type': OCI_INDEX})
        assert r.status_code == 201, r.content
        odd = b'{"schemaVersion": 1, "name": "cache/app"}'
        bad = b'{"bytes": "that do not hash to their digest"}'

        async def plant() -> None:
            for content, d in ((odd, digest(odd)), (bad, digest(b'other'))):
                assert await source.stores.meta.put_manifest(
                    'cache/app', d, 'application/vnd.example.v1+json', content,
                    subject=None, artifact_type=None, annotations=None, blobs=[],
                    children=[], tags=[], sparse=True) == []

        asyncio.run(plant())
        report = migrate(source, target, dating)
        assert report.failures == [
            f'manifest cache/app@{digest(b"other")}: corrupt in the source (its '
            f'content hashes to {digest(bad)}); not copied']
        assert (report.manifests_copied, report.manifests_sparse, report.tags_set) == \
            (2, 1, 1)
        assert target.c.get('/v2/cache/app/manifests/v1').content == index
        r = target.c.get(f'/v2/cache/app/manifests/{digest(odd)}',
                         headers={'Accept': '*/*'})
        assert (r.status_code, r.content) == (200, odd)
        assert r.headers['content-type'] == 'application/vnd.example.v1+json'
        assert target.c.get(f'/v2/cache/app/manifests/{digest(b"other")}'
                            ).status_code == 404
    finally:
        source.close()


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def start(self, phase: str, total: int, total_bytes: int = 0) -> None:
        self.calls.append(('start', phase, total, total_bytes))

    def advance(self, items: int = 1, nbytes: int = 0) -> None:
        self.calls.append(('advance', items, nbytes))

    def finish(self) -> None:
        self.calls.append(('finish',))


def test_progress_counts_every_item_and_byte_as_it_streams(source, sample, target,
                                                           dating):
    recorder = Recorder()
    migrate(source, target, dating, progress=recorder)
    starts = [c for c in recorder.calls if c[0] == 'start']
    assert [c[1] for c in starts] == ['blobs', 'manifests']
    blobs_end = recorder.calls.index(('finish',))
    blob_steps = [c for c in recorder.calls[:blobs_end] if c[0] == 'advance']
    assert sum(c[1] for c in blob_steps) == starts[0][2]
    assert sum(c[2] for c in blob_steps) == starts[0][3]
    assert any(c[1] == 0 and c[2] > 0 for c in blob_steps)  # bytes before the item
    manifest_steps = [c for c in recorder.calls[blobs_end:] if c[0] == 'advance']
    assert sum(c[1] for c in manifest_steps) == starts[1][2] == 6


class Stalled:
    """A store whose ``method`` waits at its first call until ``go`` is set
    (``reached`` says it got there); everything else passes through."""

    def __init__(self, inner: Any, method: str):
        self.inner, self.method = inner, method
        self.reached, self.go = asyncio.Event(), asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name != self.method:
            return attr

        async def stalled(*args: Any, **kw: Any) -> Any:
            self.reached.set()
            await self.go.wait()
            return await attr(*args, **kw)

        return stalled


def test_a_gc_on_the_target_waits_for_the_migration(source, sample, target, dating):
    """Blobs are linked long before the manifests that reference them arrive; a GC
    with no grace at all, in between, must not sweep them."""
    async def run() -> tuple[Any, MigrationReport | None]:
        meta = Stalled(source.stores.meta, 'get_manifest')
        migration = Migration(Stores(source.stores.blobs, meta), target.stores, dating)
        task = asyncio.create_task(migration.run())
        await meta.reached.wait()  # blobs in and linked, no manifest yet
        during = await collect(target.registry, untagged=True, grace=0)
        meta.go.set()
        return during, await task

    during, report = asyncio.run(run())
    assert during is None  # "another collection is running": it did not sweep
    assert report is not None and report.ok
    assert view(target.c, sample) == view(source.c, sample)


def test_a_store_failing_mid_copy_ends_the_run_with_its_error(source, sample, target,
                                                              dating):
    class Failing:
        name = 'blobs (filesystem)'

        def __getattr__(self, name: str) -> Any:
            return getattr(source.stores.blobs, name)

        async def reader(self, digest: Digest, *a: Any) -> Any:
            raise StoreUnavailable(self.name, 'disk on fire')

    migration = Migration(Stores(Failing(), source.stores.meta),  # type: ignore[arg-type]
                          target.stores, dating, jobs=3)
    with pytest.raises(StoreUnavailable, match='disk on fire'):
        asyncio.run(migration.run())
    # Nothing half-done: the next run, on a working store, completes.
    assert migrate(source, target, dating).ok
    assert view(target.c, sample) == view(source.c, sample)


@pytest.mark.parametrize('tty', [False, True])
def test_progress_lines(tty):
    out = io.StringIO()
    now = [0.0]
    p = Progress(out, tty=tty, clock=lambda: now[0])
    p.start('blobs', 20, 20 * 1024 * 1024)
    for i in range(20):
        now[0] += 0 if i < 10 else 1  # ten at once (one redraw), ten a second apart
        p.advance(1, 1024 * 1024)
    p.finish()
    text = out.getvalue()
    if tty:
        frames = text.split('\r')[1:]
        assert len(frames) == 12  # the start, each of the slow ten, the end
        assert frames[-1] == ('[' + '#' * 30 + '] blobs: 20/20 (100%), 20.0 MiB of '
                              '20.0 MiB\x1b[K\n')
    else:
        lines = text.splitlines()
        assert len(lines) == 11  # one per tenth
        assert lines[0] == 'blobs: 0/20 (0%), 0 B of 20.0 MiB'
        assert lines[-1] == 'blobs: 20/20 (100%), 20.0 MiB of 20.0 MiB'
        assert '\r' not in text


def test_signing_keys_are_carried_over_and_a_target_key_in_use_is_kept(
        source, target, dating):
    """Tokens the single node issued stay valid on the replicas (issue 14: the key
    lives in the metadata store); a key the target already signs with is kept."""
    from oci_ref.auth import TOKEN_KEY
    from oci_ref.ui.csrf import KEY_NAME
    from oci_ref.variations import REDIRECT_KEY

    token_key, csrf_key, redirect_key = b't' * 32, b'c' * 32, b'r' * 32

    async def store(stores: Stores, name: str, key: bytes) -> None:
        assert await stores.meta.signing_key(name, key) == key

    async def read(stores: Stores, name: str) -> bytes | None:
        return await stores.meta.signing_key(name, None)

    asyncio.run(store(source.stores, TOKEN_KEY, token_key))
    asyncio.run(store(source.stores, KEY_NAME, csrf_key))
    asyncio.run(store(source.stores, REDIRECT_KEY, redirect_key))
    asyncio.run(store(target.stores, KEY_NAME, b'x' * 32))  # the target made its own
    report = migrate(source, target, dating)
    assert (report.keys_copied, report.keys_present, report.keys_kept) == (2, 0, 1)
    assert asyncio.run(read(target.stores, TOKEN_KEY)) == token_key
    assert asyncio.run(read(target.stores, REDIRECT_KEY)) == redirect_key
    assert asyncio.run(read(target.stores, KEY_NAME)) == b'x' * 32
    assert any('must be renewed' in line for line in report.summary())
    again = migrate(source, target, dating)
    assert (again.keys_copied, again.keys_present, again.keys_kept) == (0, 2, 1)
