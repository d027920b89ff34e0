"""The configured upstreams and one client each, for the lifetime of a worker.

What the app holds (built in ``create_app``, closed on shutdown): routing by the
configured upstreams, and a lazily opened UpstreamClient per upstream, so that its
connection pool and its tokens are shared by every request of the worker.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from oci_ref.upstream.client import MANIFEST_MAX, UpstreamClient
from oci_ref.upstream.config import Upstream
from oci_ref.upstream.routing import Route, route


class Upstreams:
    def __init__(self, upstreams: Sequence[Upstream], *,
                 environ: Mapping[str, str] | None = None,
                 manifest_max_bytes: int = MANIFEST_MAX):
        self.upstreams = tuple(upstreams)
        self.environ = os.environ if environ is None else environ
        self.manifest_max_bytes = manifest_max_bytes
        self._clients: dict[str, UpstreamClient] = {}

    def __bool__(self) -> bool:
        return bool(self.upstreams)

    def __repr__(self) -> str:
        return f'Upstreams({", ".join(u.name for u in self.upstreams)})'

    def route(self, name: str, ns: str | None) -> Route:
        return route(name, ns, self.upstreams)

    def client(self, upstream: Upstream) -> UpstreamClient:
        """The worker's client for ``upstream`` (opened on first use)."""
        c = self._clients.get(upstream.name)
        if c is None:
            c = UpstreamClient(upstream, environ=self.environ,
                               manifest_max_bytes=self.manifest_max_bytes)
            self._clients[upstream.name] = c
        return c

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            await c.aclose()
