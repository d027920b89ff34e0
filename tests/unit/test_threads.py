"""storage.threads.ThreadPool: results and errors reach their callers, calls run off
the event loop, a cancelled caller's call still runs to the end."""

from __future__ import annotations

import asyncio
import threading

import pytest

from oci_ref.storage.threads import ThreadPool


@pytest.mark.parametrize('batch', [1, 16])
def test_every_caller_gets_its_own_result_or_error_from_a_pool_thread(batch):
    pool = ThreadPool(2, 'test', batch=batch)
    main = threading.get_ident()

    def work(i: int) -> tuple[int, bool]:
        if i % 7 == 3:
            raise ValueError(i)
        return i * i, threading.get_ident() != main

    async def run() -> None:
        results = await asyncio.gather(*(pool.run(work, i) for i in range(200)),
                                       return_exceptions=True)
        for i, r in enumerate(results):
            if i % 7 == 3:
                assert isinstance(r, ValueError) and r.args == (i,)
            else:
                assert r == (i * i, True)

    asyncio.run(run())
    pool.shutdown()


def test_a_cancelled_callers_call_still_runs_to_the_end():
    pool = ThreadPool(1, 'test')
    started, finish, finished = threading.Event(), threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        finish.wait(10)
        finished.set()
        return 'done'

    async def run() -> None:
        task = asyncio.ensure_future(pool.run(slow))
        await asyncio.to_thread(started.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        finish.set()
        assert await pool.run(lambda: 'next') == 'next'  # runs after slow ended
        assert finished.is_set()

    asyncio.run(run())
    pool.shutdown()
