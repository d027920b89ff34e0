"""A request body as the stores take it: batches of chunks, counted against a limit.

Both blob stores' ``append`` hand each batch to a thread (write and hash there),
so a batch is sized for one hop: about ``size`` bytes or ``chunks`` chunks, not
one hop per network read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from oci_ref.storage.interfaces import BodyTooLarge


async def batches(body: AsyncIterator[bytes], *, size: int, chunks: int | None = None,
                  limit: int | None = None) -> AsyncIterator[tuple[list[bytes], bool]]:
    """``(batch, last)``: full batches with ``last`` False, then whatever remains
    (possibly nothing) with ``last`` True, so a store can finish its work (close a
    file) in the hop that takes the final batch. Empty chunks are dropped;
    BodyTooLarge is raised as soon as the body passes ``limit`` bytes."""
    batch: list[bytes] = []
    batched = total = 0
    async for chunk in body:
        if not chunk:
            continue
        total += len(chunk)
        if limit is not None and total > limit:
            raise BodyTooLarge(limit)
        batch.append(chunk)
        batched += len(chunk)
        if batched >= size or (chunks is not None and len(batch) >= chunks):
            yield batch, False
            batch, batched = [], 0
    yield batch, True


__all__ = ['batches']
