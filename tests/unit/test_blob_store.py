"""BlobStore.append: batching into threads keeps bytes, order and hashes exact; a
failed append leaves the spool as it was (every store combination)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator

import pytest

from oci_ref.reference import Digest
from oci_ref.storage.interfaces import BlobMissing, BlobStore, BodyTooLarge
from tests.backends import Backend


async def chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def append(store: BlobStore, offset: int, parts: list[bytes],
                 limit: int | None = None) -> tuple[int, str]:
    h = hashlib.sha256()
    n = await store.append('s', offset, chunks(parts), [h], limit=limit)
    return n, h.hexdigest()


async def read_back(store: BlobStore, data: bytes) -> bytes:
    """Commit the spool and read the blob back through the interface."""
    d = Digest.of(data)
    assert await store.hash_spool('s', 'sha256') == d.encoded
    await store.commit('s', d)
    return b''.join([c async for c in await store.reader(d)])


@pytest.mark.parametrize('parts', [
    [b'x' * 3] * 100_000,                 # tiny chunks: more than IOV_MAX per batch
    [os.urandom(64 * 1024)] * 40,         # the usual 64 KiB receive size
    [os.urandom(3 * 1024 * 1024)],        # one huge chunk
    [b'a', b'', b'b' * 70_000, b'c'],     # empty chunks and a mix of sizes
], ids=['tiny', 'typical', 'huge', 'mixed'])
def test_append_writes_every_byte_in_order_and_hashes_them(backend: Backend, parts):
    registry = backend.registry()
    store = registry.blobs
    data = b''.join(parts)

    async def run() -> None:
        await store.create_spool('s')
        n, digest = await append(store, 0, parts)
        assert n == len(data)
        assert await store.spool_size('s') == len(data)
        assert digest == hashlib.sha256(data).hexdigest()
        assert await read_back(store, data) == data
        assert await store.spool_size('s') is None

    asyncio.run(run())
    registry.close()


def test_append_past_the_limit_cuts_the_spool_back(backend: Backend):
    registry = backend.registry()
    store = registry.blobs

    async def run() -> None:
        await store.create_spool('s')
        await append(store, 0, [b'keep'])
        with pytest.raises(BodyTooLarge):
            await append(store, 4, [b'y' * (2 * 1024 * 1024)], limit=1024 * 1024)
        assert await store.spool_size('s') == 4
        assert await read_back(store, b'keep') == b'keep'

    asyncio.run(run())
    registry.close()


def test_reading_a_range_and_a_missing_blob(backend: Backend):
    registry = backend.registry()
    store = registry.blobs
    data = os.urandom(3 * 1024 * 1024 + 5)

    async def run() -> None:
        await store.create_spool('s')
        await append(store, 0, [data])
        await read_back(store, data)
        d = Digest.of(data)
        part = b''.join([c async for c in await store.reader(d, 1024 * 1024 - 1, 3)])
        assert part == data[1024 * 1024 - 1:1024 * 1024 + 2]
        await store.delete(d)
        assert not await store.exists(d)
        with pytest.raises(BlobMissing):
            await store.reader(d)

    asyncio.run(run())
    registry.close()


def test_a_pushed_blob_with_fsync_is_exact(backend: Backend):
    """fsync on: each batch's writeback starts early (sync_file_range), while the next
    arrives; the bytes, their order and the hash stay exact."""
    registry = backend.registry(fsync=True)
    parts = [os.urandom(256 * 1024) for _ in range(12)]  # 3 MiB: batches in flight
    data = b''.join(parts)

    async def run() -> None:
        await registry.blobs.create_spool('s')
        assert await append(registry.blobs, 0, parts) == (len(data),
                                                          hashlib.sha256(data).hexdigest())
        assert await read_back(registry.blobs, data) == data

    asyncio.run(run())
    registry.close()


@pytest.mark.parametrize('how', ['body fails', 'cancelled'])
def test_an_append_that_ends_early_leaves_the_spool_as_it_was(backend: Backend, how):
    """A batch may be in the threads while the next is received: when the body fails
    or the request is cancelled then, the batch is finished before the spool is cut
    back (append waits for its threads, so nothing is written after it returns)."""
    registry = backend.registry()
    store = registry.blobs
    arrived = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        for _ in range(8):  # 2 MiB: the first batch goes to the threads
            yield os.urandom(256 * 1024)
        arrived.set()
        if how == 'body fails':
            raise ConnectionResetError('the client went away')
        await asyncio.Event().wait()  # never: the request is cancelled here

    async def run() -> None:
        await store.create_spool('s')
        await append(store, 0, [b'keep'])
        task = asyncio.ensure_future(store.append('s', 4, body(), [hashlib.sha256()]))
        await arrived.wait()
        if how == 'cancelled':
            task.cancel()
        with pytest.raises(ConnectionResetError if how == 'body fails'
                           else asyncio.CancelledError):
            await task
        assert await store.spool_size('s') == 4
        assert await read_back(store, b'keep') == b'keep'

    asyncio.run(run())
    registry.close()
