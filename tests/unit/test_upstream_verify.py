"""VerifyingStream: bytes pass on as they come; the last chunk only once verified."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import pytest

from oci_ref.reference import Digest
from oci_ref.upstream.errors import UpstreamBadContent
from oci_ref.upstream.verify import HASH_BATCH, VerifyingStream

DATA = bytes(range(256)) * 9000  # > 2 hash batches


def digest_of(data: bytes, algorithm: str = 'sha256') -> Digest:
    return Digest(algorithm, hashlib.new(algorithm, data).hexdigest())


async def source(data: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def collect(stream: VerifyingStream) -> tuple[list[bytes], Exception | None]:
    got: list[bytes] = []

    async def run() -> None:
        async for chunk in stream:
            got.append(chunk)

    try:
        asyncio.run(run())
    except UpstreamBadContent as ex:
        return got, ex
    return got, None


@pytest.mark.parametrize('algorithm', ['sha256', 'sha512'])
@pytest.mark.parametrize('size', [None, len(DATA)])
def test_good_bytes_pass_whole(algorithm: str, size: int | None) -> None:
    s = VerifyingStream(source(DATA), digest_of(DATA, algorithm), size=size)
    got, error = collect(s)
    assert error is None and b''.join(got) == DATA and s.verified
    assert len(DATA) > 2 * HASH_BATCH


def test_empty_blob() -> None:
    got, error = collect(VerifyingStream(source(b''), digest_of(b''), size=0))
    assert error is None and got == []


def test_wrong_bytes_never_complete() -> None:
    bad = DATA[:-1] + b'\x00'
    s = VerifyingStream(source(bad), digest_of(DATA), size=len(DATA), upstream='u')
    got, error = collect(s)
    assert isinstance(error, UpstreamBadContent) and not s.verified
    assert 'do not match' in error.reason and error.upstream == 'u'
    assert len(b''.join(got)) < len(DATA)  # the last chunk was held back
    assert error.to_registry_error().status == 502


def test_cut_off() -> None:
    s = VerifyingStream(source(DATA[:100000]), digest_of(DATA), size=len(DATA))
    got, error = collect(s)
    assert isinstance(error, UpstreamBadContent)
    assert f'sent 100000 of {len(DATA)} bytes' in error.reason
    # Short of the size announced: what passed cannot look complete.
    assert len(b''.join(got)) <= 100000


@pytest.mark.parametrize('size', [None, len(DATA)])
def test_a_chunk_waits_for_the_next_only_when_it_may_be_the_last(size: int | None
                                                                 ) -> None:
    """With the size known, a chunk short of it passes at once (the first byte is
    not delayed by the second chunk); without, each waits for the next; the last
    one always waits for the check."""
    more = asyncio.Event()
    seen: list[int] = []

    async def paused() -> AsyncIterator[bytes]:
        yield DATA[:1000]
        await more.wait()
        yield DATA[1000:]

    async def run() -> None:
        s = VerifyingStream(paused(), digest_of(DATA), size=size)
        it = s.__aiter__()
        reader = asyncio.ensure_future(it.__anext__())
        done, _ = await asyncio.wait([reader], timeout=0.5)
        seen.append(len(reader.result()) if done else 0)
        more.set()
        if not done:
            seen.append(len(await reader))
        async for chunk in it:
            seen.append(len(chunk))
        assert s.verified

    asyncio.run(run())
    assert sum(seen) == len(DATA)
    assert seen[0] == (1000 if size is not None else 0)


def test_overrun_stops_before_the_extra_bytes() -> None:
    s = VerifyingStream(source(DATA + b'extra'), digest_of(DATA), size=len(DATA))
    got, error = collect(s)
    assert isinstance(error, UpstreamBadContent) and 'more than' in error.reason
    assert len(b''.join(got)) <= len(DATA)


def test_resume_with_a_hasher() -> None:
    cut = 300000
    hasher = hashlib.sha256(DATA[:cut])
    s = VerifyingStream(source(DATA[cut:]), digest_of(DATA), size=len(DATA),
                        hasher=hasher, offset=cut)
    got, error = collect(s)
    assert error is None and b''.join(got) == DATA[cut:]
