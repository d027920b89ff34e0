"""Work a worker does besides answering requests: webhook delivery, the periodic
purge of expired uploads, and online garbage collection."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from oci_ref.config import Config
from oci_ref.hooks import Notifier
from oci_ref.registry import Registry
from oci_ref.storage.interfaces import StoreUnavailable

log = logging.getLogger('oci_ref')


class Lifecycle:
    """Falcon middleware: started and stopped by the ASGI lifespan events."""

    def __init__(self, config: Config, registry: Registry, notifier: Notifier):
        self.config = config
        self.registry = registry
        self.notifier = notifier
        self.tasks: list[asyncio.Task[None]] = []

    async def process_startup(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        # Expired sessions and stray spools (a crash's) go before the first answer.
        # A store that cannot answer now does not stop the worker: its requests get
        # 503 naming the store, and the periodic purge tries again.
        try:
            await self._purge()
        except StoreUnavailable as ex:
            log.warning('startup purge skipped: %s', ex)
        self.notifier.start()
        self.tasks.append(self._every(self.config.purge_interval, self._purge))
        if self.config.gc_interval:
            self.tasks.append(self._every(self.config.gc_interval, self._gc))

    async def process_shutdown(self, scope: dict[str, Any],
                               event: dict[str, Any]) -> None:
        for task in self.tasks:
            task.cancel()
        self.tasks.clear()
        await self.notifier.stop()

    def _every(self, seconds: int, job: Callable[[], Any]) -> asyncio.Task[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(seconds)
                try:
                    await job()
                except Exception:
                    log.exception('background job %s failed', job.__name__)

        return asyncio.get_running_loop().create_task(loop())

    async def _purge(self) -> None:
        removed = await self.registry.purge_uploads()
        if removed:
            log.info('purged %d expired upload spools', removed)

    async def _gc(self) -> None:
        # Through the store interfaces, which work off the event loop: the pass
        # never stalls this worker's requests.
        from oci_ref.gc import collect

        cached = None
        if self.config.upstream:
            from oci_ref.upstream.routing import reserved_by

            upstreams = self.config.upstream

            def cached(repo: str) -> bool:
                return reserved_by(repo, upstreams) is not None

        report = await collect(self.registry, untagged=self.config.gc_untagged,
                               grace=self.config.gc_grace, cached=cached)
        if report is not None and (report.blobs or report.manifests or report.links):
            log.info('online gc: %s', report.summary())
