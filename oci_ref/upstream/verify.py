"""A stream that checks bytes against the digest and size they were fetched by.

Chunks pass on as they arrive, except the last one: it is held back until the
digest and size check out (with the size unknown, each chunk waits for the next),
so a reader that counts bytes (a client with ``Content-Length``, the cache's spool)
never sees a bad blob as complete.
Hashing runs in a worker thread in batches (the event loop never hashes), one batch
hashed while the next is received, and a stream that runs past the expected size
fails at once, before the extra bytes go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from oci_ref.upstream.errors import UpstreamBadContent

if TYPE_CHECKING:
    from hashlib import _Hash

    from oci_ref.reference import Digest

HASH_BATCH = 1 << 20


def _update(hasher: _Hash, chunks: list[bytes]) -> None:
    for chunk in chunks:
        hasher.update(chunk)


class VerifyingStream:
    """Iterate ``source``; raise UpstreamBadContent at the end when the bytes do not
    hash to ``digest``, and as soon as they exceed ``size`` (when known).

    ``hasher``/``offset`` resume a check: a hasher already fed the first ``offset``
    bytes (a download continued with ``Range``).
    """

    def __init__(self, source: AsyncIterator[bytes], digest: Digest, *,
                 size: int | None = None, upstream: str = '',
                 hasher: _Hash | None = None, offset: int = 0):
        self.source = source
        self.digest = digest
        self.size = size
        self.upstream = upstream
        self.hasher = hasher or digest.hasher()
        self.received = offset
        self.verified = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._run()

    def _bad(self, reason: str) -> UpstreamBadContent:
        return UpstreamBadContent(self.upstream, reason, kind='blob',
                                  digest=str(self.digest))

    async def _run(self) -> AsyncIterator[bytes]:
        batch: list[bytes] = []
        batched = 0
        held: bytes | None = None
        # One batch in a thread while the next is received; in order, one at a time
        # (a hash is sequential). Awaiting each batch stalled the download.
        hashing: asyncio.Future[None] | None = None
        try:
            async for chunk in self.source:
                if not chunk:
                    continue
                self.received += len(chunk)
                if self.size is not None and self.received > self.size:
                    raise self._bad(f'sent more than the {self.size} bytes announced '
                                    f'for {self.digest}')
                batch.append(chunk)
                batched += len(chunk)
                if batched >= HASH_BATCH:
                    if hashing is not None:
                        await hashing
                    hashing = asyncio.ensure_future(
                        asyncio.to_thread(_update, self.hasher, batch))
                    batch, batched = [], 0
                if held is not None:
                    yield held
                    held = None
                if self.size is not None and self.received < self.size:
                    yield chunk  # not the last one: no need to wait for the next
                else:
                    held = chunk
            if hashing is not None:
                await hashing
                hashing = None
            if batch:
                await asyncio.to_thread(_update, self.hasher, batch)
        finally:
            if hashing is not None and not hashing.done():
                # The hasher is not left to a thread the caller may outlive.
                await asyncio.wait([hashing])
        if self.size is not None and self.received < self.size:
            raise self._bad(f'sent {self.received} of {self.size} bytes of '
                            f'{self.digest}')
        if self.hasher.hexdigest() != self.digest.encoded:
            raise self._bad(f'sent bytes that do not match {self.digest}')
        self.verified = True
        if held is not None:
            yield held
