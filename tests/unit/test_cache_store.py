"""The store additions of the pull-through cache (issue 13), per store combination:
MetadataStore.cache_tag / set_cache_tag and BlobStore.spool_reader."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from oci_ref.config import Config, ConfigError
from oci_ref.reference import Digest
from oci_ref.storage.interfaces import CacheTag, FetchClaim, SessionMissing
from tests.backends import Backend


async def chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


# The cache's records live in the SQLite metadata store so far; with PostgreSQL the
# cache is refused by configuration (test_the_cache_on_postgresql_is_refused_...).
SQLITE_METADATA = pytest.mark.parametrize(
    'backend', ['sqlite+filesystem', 'sqlite+s3'], indirect=True)


@SQLITE_METADATA
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
        tmp_path: Path) -> None:
    # The filesystem blob store only: the cache on S3 is refused by configuration
    # (test_the_cache_on_s3_is_refused_until_built).
    registry = Backend(tmp_path / 'data').registry()
    store = registry.blobs
    data = os.urandom(3 * 1024 * 1024 + 17)
    d = Digest.of(data)

    async def read(start: int, length: int) -> bytes:
        return b''.join([c async for c in await store.spool_reader('c', start, length)])

    async def run() -> None:
        with pytest.raises(SessionMissing):
            await store.spool_reader('c', 0, 1)
        await store.create_spool('c')
        half = len(data) // 2
        await store.append('c', 0, chunks([data[:half]]), [])
        assert await read(0, half) == data[:half]
        assert await read(1000, 10) == data[1000:1010]
        await store.append('c', half, chunks([data[half:]]), [])
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


@SQLITE_METADATA
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


@SQLITE_METADATA
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


def test_the_cache_on_s3_is_refused_until_built(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match='pull-through cache on blob_store = s3 is '
                       'not built yet'):
        Config.load({'root': tmp_path, 'blob_store': 's3', 's3_bucket': 'b',
                     'upstream': 'up.test=http://127.0.0.1:9'}, {})


def test_the_cache_on_postgresql_is_refused_until_built(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match='pull-through cache on a PostgreSQL '
                       'metadata store is not built yet'):
        Config.load({'root': tmp_path, 'metadata_store': 'postgresql://u@127.0.0.1/db',
                     'upstream': 'up.test=http://127.0.0.1:9'}, {})
