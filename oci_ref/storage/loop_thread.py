"""An event loop in a thread of its own, for a store built on an async driver.

An async driver's connections and pools belong to the loop that made them, but a
store is built once per process (at the composition root, before any loop runs) and
then called from whatever loop the caller runs: uvicorn's in a worker, a fresh one
per ``asyncio.run`` in the ``gc``/``fsck`` commands and in tests. So the store keeps
its connections on a private loop in a daemon thread and every call hops there and
back (:meth:`LoopThread.run`), which never blocks the caller's loop.

A call whose awaiting task is cancelled still runs to its end on the private loop
(a transaction is never cut in half by a client going away); its result is dropped.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar('T')


class LoopThread:
    def __init__(self, name: str):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the private loop; the caller's cancellation does not
        reach it."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return await asyncio.shield(asyncio.wrap_future(future))

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the private loop and wait for it (startup, shutdown: not
        from a running loop)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


__all__ = ['LoopThread']
