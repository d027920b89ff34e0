"""Operations endpoints outside /v2: liveness, readiness and Prometheus metrics.

Each probe asks the stores through their interfaces (which work off the event
loop); /healthz touches nothing, so it answers while a store is stuck.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping

import falcon
import falcon.asgi

from oci_ref.errors import ExtensionCode, RegistryError
from oci_ref.metrics import CONTENT_TYPE, exposition, flushed
from oci_ref.registry import Registry


class Health:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """GET /healthz: the process answers."""
        resp.content_type = 'application/json'
        resp.data = b'{"status": "ok"}'

    on_head = on_get


class Ready:
    def __init__(self, registry: Registry,
                 more: Mapping[str, Callable[[], str]] | None = None):
        self.registry = registry
        self.more = dict(more or {})  # name -> blocking check answering 'ok' or why not

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """GET /readyz: the metadata store and the blob store both take writes."""
        database, storage = await asyncio.gather(self.registry.meta.check(),
                                                 self.registry.blobs.check())
        checks = {'database': database, 'storage': storage}
        for name, check in self.more.items():
            checks[name] = await asyncio.to_thread(check)
        failed = {k: v for k, v in checks.items() if v != 'ok'}
        if failed:
            raise RegistryError(ExtensionCode.UNAVAILABLE, 'not ready', detail=failed,
                                status=503, headers={'Retry-After': '5'})
        resp.content_type = 'application/json'
        resp.data = json.dumps({'status': 'ready', **checks}).encode()

    on_head = on_get


class Metrics:
    def __init__(self, registry: Registry, caps: dict[str, int] | None = None):
        self.registry = registry
        # Pull-through caches with a size cap (issue 13): upstream name -> cap.
        self.caps = caps or {}

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """GET /metrics: Prometheus text exposition."""
        stats = await self.registry.meta.stats()
        caches = {name: (await self.registry.meta.cache_usage(name), cap)
                  for name, cap in self.caps.items()}
        await flushed()  # the exchanges counted while the metrics were being built
        resp.content_type = CONTENT_TYPE
        # Merging the workers' sample files reads the disk: in a thread.
        resp.data = await asyncio.to_thread(exposition, stats, caches)
