"""Eviction of the pull-through cache (oci_ref/upstream/evict.py): the choice of
what goes, without a server, and its application beside pushed content in each
store combination (the ``backend`` fixture: oci_ref/storage/sqlite_evict.py and
postgres_evict.py), with what only PostgreSQL must get right last: replicas
writing while one of them evicts."""

from __future__ import annotations

import asyncio
import functools
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from oci_ref.reference import Digest
from oci_ref.storage.interfaces import CachedLink, CachedManifest, EvictionPlan
from oci_ref.upstream.config import Upstream
from oci_ref.upstream.evict import Evictor, choose
from tests.backends import Backend, PostgresBackend


def d(name: str) -> str:
    return 'sha256:' + name * 64 if len(name) == 1 else name


def m(repo: str, digest: str, size: int, used: float, *children: str) -> CachedManifest:
    return CachedManifest(repo, d(digest), size, used, tuple(d(c) for c in children))


def link(repo: str, digest: str, size: int, at: float = 0.0) -> CachedLink:
    return CachedLink(repo, d(digest), size, at)


A, B = 'up/a', 'up/b'


def test_nothing_goes_under_the_cap() -> None:
    plan = choose([m(A, '1', 10, 1, 'x')], [link(A, 'x', 90)], 100)
    assert (plan.usage, plan.freed, plan.manifests, plan.links) == (100, 0, (), ())


def test_least_recently_used_manifests_go_first_with_the_links_only_they_kept() -> None:
    manifests = [m(A, '1', 10, 30.0, 'x'), m(A, '2', 10, 10.0, 'y'),
                 m(A, '3', 10, 20.0, 'z')]
    links = [link(A, 'x', 100), link(A, 'y', 100), link(A, 'z', 100)]
    plan = choose(manifests, links, 250)  # 330 cached: one image must go
    assert plan.manifests == ((A, d('2')),)
    assert plan.links == ((A, d('y')),)
    assert (plan.usage, plan.freed) == (330, 110)
    plan = choose(manifests, links, 120)  # the most recent alone fits
    assert plan.manifests == ((A, d('2')), (A, d('3')))


def test_a_layer_shared_by_a_kept_manifest_stays() -> None:
    manifests = [m(A, '1', 10, 1.0, 'base', 'x'), m(A, '2', 10, 2.0, 'base', 'y')]
    links = [link(A, 'base', 500), link(A, 'x', 100), link(A, 'y', 100)]
    plan = choose(manifests, links, 700)
    assert plan.manifests == ((A, d('1')),)
    assert plan.links == ((A, d('x')),)  # base: manifest 2 still references it


def test_a_blob_in_two_cached_repositories_counts_once_and_frees_at_the_last() -> None:
    manifests = [m(A, '1', 10, 1.0, 'base'), m(B, '2', 10, 2.0, 'base')]
    links = [link(A, 'base', 500), link(B, 'base', 500)]
    assert choose(manifests, links, 520).usage == 520
    plan = choose(manifests, links, 505)
    # Evicting A's manifest drops A's link, but B still holds the blob: 10 freed,
    # so B's manifest (the blob with it) must go too.
    assert plan.manifests == ((A, d('1')), (B, d('2')))
    assert set(plan.links) == {(A, d('base')), (B, d('base'))}
    assert plan.freed == 520


def test_links_no_cached_manifest_references_go_before_any_manifest() -> None:
    manifests = [m(A, '1', 10, 1.0, 'x')]
    links = [link(A, 'x', 100, at=5.0), link(A, 'old', 50, at=1.0),
             link(A, 'new', 50, at=9.0)]
    plan = choose(manifests, links, 170)
    assert plan.manifests == () and plan.links == ((A, d('old')),)
    plan = choose(manifests, links, 110)
    assert plan.manifests == () and plan.links == ((A, d('old')), (A, d('new')))


def test_an_index_keeps_its_child_manifest_reference_but_not_its_links() -> None:
    # An index references a manifest, not a blob: no link goes with it.
    manifests = [m(A, 'i', 5, 1.0, 'c'), m(A, 'c', 10, 2.0, 'x')]
    plan = choose(manifests, [link(A, 'x', 100)], 110)
    assert plan.manifests == ((A, d('i')),) and plan.links == ()


def test_nothing_used_or_linked_recently_goes_even_over_the_cap() -> None:
    manifests = [m(A, '1', 10, 1.0, 'x'), m(A, '2', 10, 50.0, 'y')]
    links = [link(A, 'x', 100, at=1.0), link(A, 'y', 100, at=50.0),
             link(A, 'new', 100, at=60.0)]
    plan = choose(manifests, links, 0, young_after=40.0)
    assert plan.manifests == ((A, d('1')),) and plan.links == ((A, d('x')),)
    assert plan.usage - plan.freed == 210  # over the cap: the rest is young
    # The old manifest's layer fetched a moment ago stays with it gone.
    plan = choose([m(A, '1', 10, 1.0, 'x')], [link(A, 'x', 100, at=45.0)], 0,
                  young_after=40.0)
    assert plan.manifests == ((A, d('1')),) and plan.links == ()


def test_eviction_in_the_store_keeps_pushed_content_and_shared_blobs(
        backend: Backend) -> None:
    """Two cached images under up/, one pushed image sharing a layer with the
    older cached one; a cap that fits one cached image."""
    registry = backend.registry()
    meta, blobs = registry.meta, registry.blobs
    upstream = Upstream(name='up', url='http://127.0.0.1:1', cache_max_bytes=1,
                        cache_min_age=0)

    async def blob(repo: str, data: bytes) -> str:
        digest = Digest.of(data)
        await blobs.create_spool('s')
        await blobs.append('s', 0, _one(data), [])
        await blobs.commit('s', digest)
        await meta.link_blob(repo, str(digest), len(data))
        return str(digest)

    async def manifest(repo: str, name: str, layers: list[str], sparse: bool) -> str:
        digest = str(Digest.of(name.encode()))
        assert await meta.put_manifest(
            repo, digest, 'application/json', name.encode(), subject=None,
            artifact_type=None, annotations=None, blobs=layers, children=[],
            tags=['v1'], sparse=sparse) == []
        return digest

    async def run() -> None:
        shared = await blob('mine/app', b'shared layer' * 100)
        await blob('up/old', b'shared layer' * 100)
        only_old = await blob('up/old', b'old layer' * 100)
        new_layer = await blob('up/new', b'new layer' * 100)
        pushed = await manifest('mine/app', 'pushed', [shared], sparse=False)
        old = await manifest('up/old', 'old', [shared, only_old], sparse=True)
        new = await manifest('up/new', 'new', [new_layer], sparse=True)
        await meta.set_cache_tag('up/old', 'v1', old, 1.0)
        await meta.touch_cached('up/old', old, 100.0)
        await meta.touch_cached('up/new', new, 200.0)
        await meta.touch_cached('up/new', new, 150.0)  # never moves back
        before = await meta.cache_usage('up')
        assert before == 1200 + 900 + 900 + 3 + 3
        counts = await meta.cache_counts(['up'])
        assert counts == {'cached_manifests': 2, 'pushed_manifests': 1,
                          'cached_blob_links': 3, 'cached_blobs': 2, 'pushed_blobs': 1}
        evictor = Evictor(registry, [upstream])
        evicted = await evictor.evict(
            Upstream(name='up', url='http://127.0.0.1:1', cache_max_bytes=before - 1,
                     cache_min_age=0))
        assert evicted is not None
        assert evicted.manifests == [('up/old', old)]
        assert sorted(evicted.links) == sorted([('up/old', shared), ('up/old', only_old)])
        assert evicted.blobs == [(only_old, 900)]  # the shared one is pushed too
        assert not await blobs.exists(Digest.parse(only_old))
        assert await blobs.exists(Digest.parse(shared))
        assert await meta.get_manifest('up/old', old) is None
        assert await meta.get_tagged_manifest('up/old', 'v1') is None
        assert await meta.cache_tag('up/old', 'v1') is None
        assert await meta.get_manifest('up/new', new) is not None
        assert await meta.get_manifest('mine/app', pushed) is not None
        assert await meta.blob_size('mine/app', shared) == 1200
        assert await meta.cache_usage('up') == 900 + 3
        assert 'up/old' not in await meta.repositories(None, 100)
        # Under the cap now: a second pass removes nothing.
        assert await evictor.evict(
            Upstream(name='up', url='http://127.0.0.1:1', cache_max_bytes=before - 1,
                     cache_min_age=0)) is None

    asyncio.run(run())
    registry.close()


def test_a_blob_a_kept_manifest_references_elsewhere_is_not_deleted(
        backend: Backend) -> None:
    """A sparse cached manifest in another repository references the blob without
    a link (its layer was never pulled there): the content stays."""
    registry = backend.registry()
    meta, blobs = registry.meta, registry.blobs
    data = b'layer' * 50
    digest = str(Digest.of(data))

    async def run() -> None:
        await blobs.create_spool('s')
        await blobs.append('s', 0, _one(data), [])
        await blobs.commit('s', Digest.parse(digest))
        await meta.link_blob('up/a', digest, len(data))
        for repo, used in (('up/a', 1.0), ('up/b', 2.0)):
            body = repo.encode()
            await meta.put_manifest(repo, str(Digest.of(body)), 'application/json', body,
                                    subject=None, artifact_type=None, annotations=None,
                                    blobs=[digest], children=[], tags=[], sparse=True)
            await meta.touch_cached(repo, str(Digest.of(body)), used)
        evicted = await meta.evict_cached('up', 5, choose)
        assert evicted.manifests == [('up/a', str(Digest.of(b'up/a')))]
        assert evicted.links == [('up/a', digest)] and evicted.blobs == []
        assert await blobs.exists(Digest.parse(digest))
        # Once the manifest that kept it goes too, so does the blob's row.
        evicted = await meta.evict_cached('up', 0, choose)
        assert evicted.manifests == [('up/b', str(Digest.of(b'up/b')))]
        assert evicted.links == [] and evicted.blobs == [(digest, len(data))]
        assert digest not in await meta.blob_sizes()

    asyncio.run(run())
    registry.close()


async def _one(data: bytes):  # type: ignore[no-untyped-def]
    yield data


def test_gc_counts_cached_content_apart(backend: Backend) -> None:
    """A GC pass removing an untagged cached manifest and an untagged pushed one
    says how many were cached."""
    from oci_ref.gc import collect

    registry = backend.registry(clock=True)

    async def run() -> None:
        for repo in ('up/x', 'mine/x'):
            body = repo.encode()
            await registry.meta.put_manifest(
                repo, str(Digest.of(body)), 'application/json', body, subject=None,
                artifact_type=None, annotations=None, blobs=[], children=[], tags=[],
                sparse=True)
        backend.clock.advance(10)
        report = await collect(registry, untagged=True, grace=1,
                               cached=lambda r: r.startswith('up/'))
        assert report is not None
        assert sorted(r for r, _ in report.manifests) == ['mine/x', 'up/x']
        assert report.cached_manifests == 1
        assert report.summary().startswith('removed 2 manifests (1 cached), 0 blob links')

    asyncio.run(run())
    registry.close()


def test_a_prefix_holds_only_its_own_repositories(backend: Backend) -> None:
    """``up`` is the range 'up/' <= repo < 'up0': not 'up0/x', 'up.x/y' or 'upx'."""
    registry = backend.registry()
    meta = registry.meta

    async def run() -> None:
        for i, repo in enumerate(['up/a', 'up/b/c', 'up0/x', 'up.x/y', 'upx', 'u/p']):
            body = f'manifest {i}'.encode()
            await meta.put_manifest(repo, str(Digest.of(body)), 'application/json', body,
                                    subject=None, artifact_type=None, annotations=None,
                                    blobs=[], children=[], tags=[], sparse=True)
        assert await meta.cache_usage('up') == 2 * len(b'manifest 0')
        counts = await meta.cache_counts(['up'])
        assert (counts['cached_manifests'], counts['pushed_manifests']) == (2, 4)
        evicted = await meta.evict_cached('up', 0, choose)
        assert sorted(r for r, _ in evicted.manifests) == ['up/a', 'up/b/c']
        assert await meta.cache_counts(['up']) == {
            'cached_manifests': 0, 'pushed_manifests': 4, 'cached_blob_links': 0,
            'cached_blobs': 0, 'pushed_blobs': 0}

    asyncio.run(run())
    registry.close()


def test_uses_are_written_at_most_once_per_touch_interval(backend: Backend) -> None:
    """Not a write per pull: within cache_touch_interval a use is remembered in
    memory only; an uncapped upstream records none."""
    registry = backend.registry()
    now = [1000.0]
    capped = Upstream(name='up', url='http://127.0.0.1:1', cache_max_bytes=10**9,
                      cache_touch_interval=60)
    free = Upstream(name='free', url='http://127.0.0.1:1')
    evictor = Evictor(registry, [capped, free], clock=lambda: now[0])

    def used() -> dict[str, float]:
        with backend.db() as db:
            return dict(db.execute('SELECT repo, used_at FROM cache_used').fetchall())

    async def run() -> None:
        await evictor.touch(capped, 'up/a', d('1'))
        assert used() == {'up/a': 1000.0}
        now[0] = 1059.0
        await evictor.touch(capped, 'up/a', d('1'))
        assert used() == {'up/a': 1000.0}
        now[0] = 1061.0
        await evictor.touch(capped, 'up/a', d('1'))
        assert used() == {'up/a': 1061.0}
        await evictor.touch(free, 'free/a', d('1'))
        assert 'free/a' not in used()

    asyncio.run(run())
    registry.close()


# -- PostgreSQL: replicas writing while one of them evicts -----------------------------


@pytest.mark.engines
def test_an_eviction_waits_for_a_manifest_another_replica_is_storing(
        postgres_metadata_url: str, tmp_path: Path) -> None:
    """Another replica's transaction stores a cached manifest referencing a blob
    whose link this eviction would drop as unreferenced (an old link, cap 0), not
    committed yet when the eviction begins. The eviction waits for it (it locks the
    content tables against writers) and chooses again on what is there then: the
    manifest is young, so its blob's link and content stay. Once that manifest is
    gone, the same eviction removes both: the setup was one to evict."""
    import psycopg

    backend = PostgresBackend(tmp_path / 'data', postgres_metadata_url)
    registry = backend.registry()
    meta, blobs = registry.meta, registry.blobs
    data = b'layer' * 20
    layer = str(Digest.of(data))
    body = b'{"cached": "elsewhere"}'
    manifest = str(Digest.of(body))
    evict = functools.partial(choose, young_after=time.time() - 60)

    async def store_blob() -> None:
        await blobs.create_spool('s')
        await blobs.append('s', 0, _one(data), [])
        await blobs.commit('s', Digest.parse(layer))
        await meta.link_blob('up/a', layer, len(data))

    asyncio.run(store_blob())
    backend.age(3600)
    other = psycopg.connect(postgres_metadata_url)  # a transaction, as a replica's
    watch = psycopg.connect(postgres_metadata_url, autocommit=True)
    try:
        other.execute('INSERT INTO manifests (repo, digest, media_type, size, content, '
                      "created_at) VALUES ('up/a', %s, 'application/json', %s, %s, %s)",
                      [manifest, len(body), body, time.time()])
        other.execute("INSERT INTO manifest_refs (repo, digest, child) "
                      "VALUES ('up/a', %s, %s)", [manifest, layer])
        with ThreadPoolExecutor(1) as pool:
            evicting = pool.submit(asyncio.run, meta.evict_cached('up', 0, evict))
            deadline = time.monotonic() + 30
            # The eviction waits on the table lock (an event in pg_locks).
            while not watch.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'relation' AND "
                    'NOT granted AND database = (SELECT oid FROM pg_database WHERE '
                    'datname = current_database())').fetchone()[0]:
                assert not evicting.done(), evicting.result()
                assert time.monotonic() < deadline, 'the eviction never waited'
            other.commit()
            evicted = evicting.result(timeout=30)
        assert (evicted.manifests, evicted.links, evicted.blobs) == ([], [], [])
        assert asyncio.run(meta.blob_size('up/a', layer)) == len(data)
        assert asyncio.run(blobs.exists(Digest.parse(layer)))
        other.execute("DELETE FROM manifest_refs WHERE repo = 'up/a'")
        other.execute("DELETE FROM manifests WHERE repo = 'up/a'")
        other.commit()
        evicted = asyncio.run(meta.evict_cached('up', 0, evict))
        assert evicted.links == [('up/a', layer)] and evicted.blobs == [(layer, len(data))]
    finally:
        other.close()
        watch.close()
        registry.close()


@pytest.mark.engines
def test_what_changed_between_the_choice_and_the_removal_stays(
        postgres_metadata_url: str, tmp_path: Path) -> None:
    """The choice is made on a snapshot without a lock; the removal re-checks each
    row. Between the two (inside ``choose``, as another replica would), manifest 1
    is served and an unreferenced link is renewed by a fetch: both stay, and so
    do the link and blob manifest 1 references; manifest 2 goes as chosen. The
    next eviction takes manifest 1 with its link and blob."""
    import psycopg

    backend = PostgresBackend(tmp_path / 'data', postgres_metadata_url)
    registry = backend.registry()
    meta, blobs = registry.meta, registry.blobs
    layer, loose = b'layer' * 20, b'loose' * 30
    one, two = b'{"manifest": 1}', b'{"manifest": 2}'

    async def setup() -> None:
        for repo, data in (('up/a', layer), ('up/c', loose)):
            await blobs.create_spool('s')
            await blobs.append('s', 0, _one(data), [])
            await blobs.commit('s', Digest.of(data))
            await meta.link_blob(repo, str(Digest.of(data)), len(data))
        for repo, body, refs in (('up/a', one, [str(Digest.of(layer))]),
                                 ('up/b', two, [])):
            await meta.put_manifest(repo, str(Digest.of(body)), 'application/json', body,
                                    subject=None, artifact_type=None, annotations=None,
                                    blobs=refs, children=[], tags=['v1'], sparse=True)

    asyncio.run(setup())
    backend.age(3600)
    chosen = []

    def meanwhile(*args: Any) -> EvictionPlan:
        plan = choose(*args)
        chosen.append(plan)
        with psycopg.connect(postgres_metadata_url, autocommit=True) as db:
            db.execute('INSERT INTO cache_used VALUES (%s, %s, %s)',
                       ['up/a', str(Digest.of(one)), time.time()])
            db.execute("UPDATE repo_blobs SET created_at = %s WHERE repo = 'up/c'",
                       [time.time()])
        return plan

    try:
        evicted = asyncio.run(meta.evict_cached('up', 0, meanwhile))
        (plan,) = chosen
        assert len(plan.manifests) == 2 and len(plan.links) == 2  # all of it, chosen
        assert (evicted.manifests, evicted.links, evicted.blobs) == (
            [('up/b', str(Digest.of(two)))], [], [])
        assert evicted.freed == len(two)
        for repo, data in (('up/a', layer), ('up/c', loose)):
            assert asyncio.run(meta.blob_size(repo, str(Digest.of(data)))) == len(data)
        assert asyncio.run(meta.get_manifest('up/a', str(Digest.of(one)))) is not None
        evicted = asyncio.run(meta.evict_cached('up', 0, choose))
        assert evicted.manifests == [('up/a', str(Digest.of(one)))]
        assert sorted(evicted.blobs) == sorted(
            [(str(Digest.of(layer)), len(layer)), (str(Digest.of(loose)), len(loose))])
    finally:
        registry.close()
