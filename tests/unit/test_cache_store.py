"""The store additions of the pull-through cache (issue 13), per store combination
(issue 14: its state lives in the shared stores too): MetadataStore.cache_tag /
set_cache_tag / the download claims, and BlobStore readable spools."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from oci_ref.config import Config
from oci_ref.reference import Digest
from oci_ref.storage.interfaces import CacheTag, FetchClaim, SessionMissing
from tests.backends import Backend


async def chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def test_cache_tags_record_and_replace(backend: Backend) -> None:
    registry = backend.registry()
    meta = registry.meta

    async def run() -> None:
        assert await meta.cache_tag('up.test/lib/app', 'v1') is None
        await meta.set_cache_tag('up.test/lib/app', 'v1', 'sha256:' + 'a' * 64, 100.0)
        await meta.set_cache_tag('up.test/lib/app', 'v2', 'sha256:' + 'b' * 64, 50.0)
        assert await meta.cache_tag('up.test/lib/app', 'v1') == CacheTag(
            'sha256:' + 'a' * 64, 100.0)
        await meta.set_cache_tag('up.test/lib/app', 'v1', 'sha256:' + 'c' * 64, 200.5)
        assert await meta.cache_tag('up.test/lib/app', 'v1') == CacheTag(
            'sha256:' + 'c' * 64, 200.5)
        assert await meta.cache_tag('up.test/lib/app', 'V1') is None  # case-sensitive
        assert await meta.cache_tag('up.test/lib/other', 'v1') is None

    asyncio.run(run())
    registry.close()


def test_spool_reader_reads_what_was_appended_and_survives_the_commit(
        backend: Backend) -> None:
    registry = backend.registry()
    store = registry.blobs
    data = os.urandom(3 * 1024 * 1024 + 17)
    d = Digest.of(data)

    async def read(start: int, length: int) -> bytes:
        return b''.join([c async for c in await store.spool_reader('c', start, length)])

    async def run() -> None:
        with pytest.raises(SessionMissing):
            await store.spool_reader('c', 0, 1)
        await store.create_spool('c', readable=True)
        half = len(data) // 2
        await store.append('c', 0, chunks([data[:half]]), [])
        assert await read(0, half) == data[:half]
        assert await read(1000, 10) == data[1000:1010]
        await store.append('c', half, chunks([data[half:]]), [])
        assert await read(half - 5, 10) == data[half - 5:half + 5]  # across appends
        # Opened before the commit: reads on after it, or says the spool is gone
        # (the cache then reads the committed blob), never other bytes.
        opened = await store.spool_reader('c', half, len(data) - half)
        await store.commit('c', d)
        try:
            rest: bytes | None = b''.join([c async for c in opened])
        except SessionMissing:
            rest = None
        assert rest in (None, data[half:])
        assert b''.join([c async for c in await store.reader(d)]) == data
        with pytest.raises(SessionMissing):
            await store.spool_reader('c', 0, 1)

    asyncio.run(run())
    registry.close()


def test_a_readable_spool_in_cache_sized_batches_commits_byte_exact(
        backend: Backend) -> None:
    # The shape of a pull-through download: a small first write, then batches of
    # the store's chunk minimum (on S3 those become server-side part copies, the
    # small ones are joined with their neighbour), a short last one.
    registry = backend.registry()
    store = registry.blobs
    step = max(store.chunk_min_length, 256 * 1024)
    sizes = [16 * 1024, step + 3, step, 7 * 1024, step + 1, 1000]
    data = os.urandom(sum(sizes))
    d = Digest.of(data)

    async def run() -> None:
        await store.create_spool('fetch', readable=True)
        at = 0
        for n in sizes:
            assert await store.append('fetch', at, chunks([data[at:at + n]]), []) == n
            at += n
            # Every byte so far readable, from anywhere in it, while it grows.
            got = b''.join([c async for c in await store.spool_reader(
                'fetch', at // 3, at - at // 3)])
            assert got == data[at // 3:at]
        await store.commit('fetch', d)
        assert await store.hash(d) == d.encoded
        tail = b''.join([c async for c in await store.reader(d, len(data) - 5000)])
        assert tail == data[-5000:]
        assert await store.spools() == []

    asyncio.run(run())
    registry.close()


@pytest.mark.parametrize('backend', ['sqlite+filesystem', 'sqlite+s3'], indirect=True)
def test_a_dead_owners_fetch_claim_is_taken_over_at_once(backend: Backend) -> None:
    """After a crash (SIGKILL) the claim's heartbeat is fresh but its owner's PID is
    gone: the claim reads stale, so a restarted server downloads at once instead of
    tailing a spool nobody writes (tests/e2e/test_pull_through_crash.py)."""
    registry = backend.registry()
    meta = registry.meta
    key = 'up.test/lib/app@sha256:' + 'e' * 64
    gone = subprocess.Popen(['true'])
    gone.wait()  # reaped: its PID names no process now
    dead, alive = f'{gone.pid}-0a1b2c', f'{os.getpid()}-3d4e5f'

    async def run() -> None:
        await meta.claim_fetch(key, alive, 'tmp-cache-alive', 100.0, 70.0)
        assert (await meta.claim_fetch(key, dead, 'tmp-cache-dead', 101.0, 71.0)
                ).owner == alive  # a live owner keeps its fresh claim
        await meta.end_fetch(key, alive)
        await meta.claim_fetch(key, dead, 'tmp-cache-dead', 100.0, 70.0)
        assert await meta.get_fetch(key) == FetchClaim(dead, 'tmp-cache-dead', None, 0,
                                                       0.0)
        taken = await meta.claim_fetch(key, alive, 'tmp-cache-alive', 101.0, 71.0)
        assert taken == FetchClaim(alive, 'tmp-cache-alive', None, 0, 101.0)

    asyncio.run(run())
    registry.close()


def test_fetch_claims_one_owner_progress_and_takeover(backend: Backend) -> None:
    registry = backend.registry()
    meta = registry.meta
    key = 'up.test/lib/app@sha256:' + 'd' * 64

    async def run() -> None:
        assert await meta.get_fetch(key) is None
        won = await meta.claim_fetch(key, 'a', 'tmp-cache-a', 100.0, 70.0)
        assert won == FetchClaim('a', 'tmp-cache-a', None, 0, 100.0)
        # Held and fresh: the second asker learns who downloads into which spool.
        lost = await meta.claim_fetch(key, 'b', 'tmp-cache-b', 101.0, 71.0)
        assert (lost.owner, lost.spool) == ('a', 'tmp-cache-a')
        assert await meta.update_fetch(key, 'a', 4096, 9000, 105.0)
        assert not await meta.update_fetch(key, 'b', 1, 1, 105.0)
        assert await meta.get_fetch(key) == FetchClaim('a', 'tmp-cache-a', 9000, 4096,
                                                       105.0)
        # Its heartbeat went stale: taken over, and the old owner learns it.
        taken = await meta.claim_fetch(key, 'b', 'tmp-cache-b', 200.0, 170.0)
        assert taken == FetchClaim('b', 'tmp-cache-b', None, 0, 200.0)
        assert not await meta.update_fetch(key, 'a', 8192, 9000, 201.0)
        await meta.end_fetch(key, 'a')  # not the owner: nothing happens
        assert (await meta.get_fetch(key)).owner == 'b'  # type: ignore[union-attr]
        await meta.end_fetch(key, 'b')
        assert await meta.get_fetch(key) is None

    asyncio.run(run())
    registry.close()


def test_concurrent_claims_agree_on_one_owner(backend: Backend) -> None:
    # Replicas asking at once (on PostgreSQL: separate pooled connections, so
    # really concurrent statements): exactly one wins, and everyone learns who.
    registry = backend.registry()
    meta = registry.meta
    key = 'up.test/lib/app@sha256:' + 'e' * 64

    async def run() -> None:
        claims = await asyncio.gather(*[
            meta.claim_fetch(key, f'w{i}', f'tmp-cache-{i}', 100.0, 70.0)
            for i in range(8)])
        owners = {(c.owner, c.spool) for c in claims}
        assert len(owners) == 1, owners
        (owner, spool), = owners
        assert spool == f'tmp-cache-{owner[1:]}'
        assert await meta.get_fetch(key) == FetchClaim(owner, spool, None, 0, 100.0)

    asyncio.run(run())
    registry.close()


@pytest.mark.parametrize('backend', ['postgresql+filesystem'], indirect=True)
def test_a_claim_whose_process_died_is_taken_over_at_once(backend: Backend) -> None:
    # PostgreSQL: a claim records its owner's presence key, as leases do; holder 0
    # is held by no process (a replica killed mid-download), so its fresh
    # heartbeat does not protect it.
    registry = backend.registry()
    meta = registry.meta
    key = 'up.test/lib/app@sha256:' + 'f' * 64
    with backend.db() as db:
        db.execute('INSERT INTO cache_fetches (key, owner, spool, size, written, '
                   "heartbeat, holder) VALUES (?, 'dead', 'tmp-cache-dead', 10, 5, "
                   '9e99, 0)', [key])

    async def run() -> None:
        # Its followers learn it is dead (heartbeat 0: stale however fresh it was).
        assert await meta.get_fetch(key) == FetchClaim('dead', 'tmp-cache-dead', 10,
                                                       5, 0.0)
        taken = await meta.claim_fetch(key, 'b', 'tmp-cache-b', 100.0, 70.0)
        assert taken == FetchClaim('b', 'tmp-cache-b', None, 0, 100.0)
        # A live owner (this process) keeps it against the next asker.
        kept = await meta.claim_fetch(key, 'c', 'tmp-cache-c', 101.0, 71.0)
        assert kept.owner == 'b'
        assert await meta.get_fetch(key) == taken

    asyncio.run(run())
    registry.close()


def test_cached_content_is_counted_apart_and_its_tags_listed(backend: Backend) -> None:
    # What fsck, /metrics and the web view ask about the cache (up/...: cached;
    # own/...: pushed; a blob in both counts as pushed, eviction leaves it).
    registry = backend.registry()
    meta = registry.meta
    x, y = 'sha256:' + '1' * 64, 'sha256:' + '2' * 64
    content = b'{"schemaVersion":2}'
    m = Digest.of(content)

    async def run() -> None:
        await meta.link_blob('up/lib/a', x, 100)
        await meta.link_blob('up/lib/a', y, 50)
        await meta.link_blob('own/b', y, 50)
        assert await meta.put_manifest(
            'up/lib/a', str(m), 'application/vnd.oci.image.manifest.v1+json', content,
            subject=None, artifact_type=None, annotations=None, blobs=[x, y],
            children=[x, y], tags=['v1']) == []
        await meta.touch_cached('up/lib/a', str(m), 500.0)
        await meta.touch_cached('up/lib/a', str(m), 400.0)  # never moves back
        assert await meta.cache_counts(['up', 'other']) == {
            'cached_manifests': 1, 'pushed_manifests': 0, 'cached_blob_links': 2,
            'cached_blobs': 1, 'pushed_blobs': 1}
        assert await meta.cache_usage('up') == len(content) + 150
        assert await meta.cache_usage('u') == 0  # a prefix is a whole name
        await meta.set_cache_tag('up/lib/a', 'v1', str(m), 12.5)
        assert await meta.cache_tags_validated('up/lib/a', ['v1', 'v2']) == {'v1': 12.5}

    asyncio.run(run())
    with backend.db() as db:
        assert db.execute('SELECT used_at FROM cache_used').fetchone()[0] == 500.0
    registry.close()


def test_the_cache_is_allowed_on_postgresql_and_s3(tmp_path: Path) -> None:
    config = Config.load({'root': tmp_path, 'blob_store': 's3', 's3_bucket': 'b',
                          'metadata_store': 'postgresql://u@127.0.0.1/db',
                          'upstream': 'up.test=http://127.0.0.1:9'}, {})
    assert [u.name for u in config.upstream] == ['up.test']
