"""A bounded thread pool for store calls, with few event-loop wake-ups.

``loop.run_in_executor`` costs two futures and a loop wake-up per call; on the
manifest path, where a request is one short SQLite query, that hop was a third of
the request's cost. Here each pool thread takes up to ``batch`` waiting calls at
once, runs them one after another, and hands all their results back to the event
loop in one ``call_soon_threadsafe``: under load, many requests share one wake-up.

A call whose awaiting task was cancelled still runs to the end (a transaction is
never cut in half by a client going away); its result is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar('T')

_Item = tuple[asyncio.AbstractEventLoop, 'asyncio.Future[Any]', Callable[..., Any],
              tuple[Any, ...]]
_STOP = None


class ThreadPool:
    """``size`` daemon threads serving :meth:`run`; ``batch`` calls at most per turn
    (1 for calls that may wait long, such as writes behind a database lock, so one
    slow call never holds others back)."""

    def __init__(self, size: int, name: str, *, batch: int = 1):
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._batch = batch
        self._threads = [threading.Thread(target=self._serve, name=f'{name}-{i}',
                                          daemon=True) for i in range(size)]
        for t in self._threads:
            t.start()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((loop, future, fn, args))
        return await future

    def shutdown(self) -> None:
        for _ in self._threads:
            self._queue.put(_STOP)
        for t in self._threads:
            t.join()

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            items = [first]
            stop = False
            while len(items) < self._batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                items.append(item)
            done: dict[asyncio.AbstractEventLoop, list[tuple[Any, Any, Any]]] = {}
            for loop, future, fn, args in items:
                try:
                    result, error = fn(*args), None
                except BaseException as ex:  # handed to the awaiting task
                    result, error = None, ex
                done.setdefault(loop, []).append((future, result, error))
            for loop, results in done.items():
                # RuntimeError: the loop is closed, nobody waits any more.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_deliver, results)
            if stop:
                return


def _deliver(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]
             ) -> None:
    for future, result, error in results:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


__all__ = ['ThreadPool']
