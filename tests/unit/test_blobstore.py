"""BlobStore.append: batching into threads keeps bytes, order and hashes exact."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from oci_ref.blobstore import BlobStore, BodyTooLarge


async def chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def append(store: BlobStore, path: Path, offset: int, parts: list[bytes],
           limit: int | None = None) -> tuple[int, str]:
    h = hashlib.sha256()
    with store.locked_spool(path) as fd:
        n = asyncio.run(store.append(fd, offset, chunks(parts), [h], limit=limit))
    return n, h.hexdigest()


@pytest.mark.parametrize('parts', [
    [b'x' * 3] * 100_000,                 # tiny chunks: more than IOV_MAX per batch
    [os.urandom(64 * 1024)] * 40,         # the usual 64 KiB receive size
    [os.urandom(3 * 1024 * 1024)],        # one huge chunk
    [b'a', b'', b'b' * 70_000, b'c'],     # empty chunks and a mix of sizes
], ids=['tiny', 'typical', 'huge', 'mixed'])
def test_append_writes_every_byte_in_order_and_hashes_them(tmp_path, parts):
    store = BlobStore(tmp_path)
    path = store.spool_path('s')
    data = b''.join(parts)
    n, digest = append(store, path, 0, parts)
    assert n == len(data)
    assert path.read_bytes() == data
    assert digest == hashlib.sha256(data).hexdigest()


def test_append_past_the_limit_cuts_the_spool_back(tmp_path):
    store = BlobStore(tmp_path)
    path = store.spool_path('s')
    append(store, path, 0, [b'keep'])
    with pytest.raises(BodyTooLarge):
        append(store, path, 4, [b'y' * (2 * 1024 * 1024)], limit=1024 * 1024)
    assert path.read_bytes() == b'keep'
