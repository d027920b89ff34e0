"""Operations endpoints outside /v2: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import uuid
from collections.abc import Callable, Mapping

import falcon
import falcon.asgi

from oci_ref.errors import ErrorCode, RegistryError
from oci_ref.metrics import CONTENT_TYPE, exposition
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
        """GET /readyz: the database and the storage both take writes."""
        checks = {'database': self._database(), 'storage': self._storage()}
        for name, check in self.more.items():
            checks[name] = await asyncio.to_thread(check)
        failed = {k: v for k, v in checks.items() if v != 'ok'}
        if failed:
            raise RegistryError(ErrorCode.UNSUPPORTED, 'not ready', detail=failed,
                                status=503, headers={'Retry-After': '5'})
        resp.content_type = 'application/json'
        resp.data = json.dumps({'status': 'ready', **checks}).encode()

    on_head = on_get

    def _database(self) -> str:
        try:
            # Taking the write lock proves the file is writable and not wedged.
            db = self.registry.meta.db
            db.execute('BEGIN IMMEDIATE')
            db.execute('ROLLBACK')
            return 'ok'
        except sqlite3.Error as ex:
            return f'database not writable: {ex}'

    def _storage(self) -> str:
        probe = self.registry.store.uploads / f'.ready-{uuid.uuid4()}'
        try:
            fd = os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
            try:
                os.write(fd, b'ok')
            finally:
                os.close(fd)
            probe.unlink()
            return 'ok'
        except OSError as ex:
            return f'storage not writable: {ex.strerror}'


class Metrics:
    def __init__(self, registry: Registry):
        self.registry = registry

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """GET /metrics: Prometheus text exposition."""
        resp.content_type = CONTENT_TYPE
        resp.data = exposition(self.registry.meta)
