"""oci_ref/storage/bodies.py: how a request body is cut into the stores' batches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from oci_ref.storage.bodies import batches
from oci_ref.storage.interfaces import BodyTooLarge


async def body_of(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def cut(body: list[bytes], **kw: int) -> list[tuple[list[bytes], bool]]:
    async def run() -> list[tuple[list[bytes], bool]]:
        return [b async for b in batches(body_of(body), **kw)]
    return asyncio.run(run())


def test_full_batches_then_the_rest_marked_last():
    got = cut([b'ab', b'', b'cd', b'e'], size=4)
    assert got == [([b'ab', b'cd'], False), ([b'e'], True)]


def test_a_body_ending_on_a_batch_boundary_ends_with_an_empty_last_batch():
    assert cut([b'abcd'], size=4) == [([b'abcd'], False), ([], True)]
    assert cut([], size=4) == [([], True)]


def test_many_small_chunks_make_a_batch_before_its_size():
    got = cut([b'a'] * 5, size=100, chunks=2)
    assert got == [([b'a', b'a'], False), ([b'a', b'a'], False), ([b'a'], True)]


def test_the_limit_is_enforced_as_the_body_passes_it():
    assert cut([b'ab', b'cd'], size=100, limit=4)[-1] == ([b'ab', b'cd'], True)
    with pytest.raises(BodyTooLarge):
        cut([b'ab', b'cd', b'e'], size=100, limit=4)
