"""Routing requests to upstreams (issue 13): a Falcon middleware placed before access
control, and the helpers the resources use to answer a proxied name.

It reads ``ns`` (distribution-spec §Registry Proxying), sets ``req.context.route``,
refuses writes into an upstream's names and reads its patterns exclude, and echoes
``ns`` in ``OCI-Namespace``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

import falcon
import falcon.asgi

from oci_ref.errors import ErrorCode
from oci_ref.http import ASGIApp, Receive, Send, query_value
from oci_ref.storage.interfaces import StoreUnavailable
from oci_ref.upstream.errors import FetchFailed
from oci_ref.upstream.routing import Route, check_read, check_write, namespace_header

if TYPE_CHECKING:  # the cache (and httpx) load only when upstreams are configured
    from oci_ref.upstream.cache import PullThrough

log = logging.getLogger('oci_ref.cache')
# What own storage answers when a default upstream may have the content instead.
UNKNOWN_OWN = frozenset({ErrorCode.MANIFEST_UNKNOWN, ErrorCode.NAME_UNKNOWN,
                         ErrorCode.BLOB_UNKNOWN})
# Routes kept per worker (names and ns values): more distinct ones start afresh.
ROUTES_KEPT = 4096


class UpstreamRouting:
    def __init__(self, cache: PullThrough, purge_interval: int = 300):
        self.cache = cache
        self.upstreams = cache.upstreams
        self.purge_interval = purge_interval
        self._evictions: asyncio.Task[None] | None = None
        self._routes: dict[tuple[str, str | None],
                           tuple[Route, dict[str, str], bool]] = {}

    async def process_resource(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                               resource: Any, params: dict[str, Any]) -> None:
        name = params.get('name')
        if name is None:
            return
        key = (name, query_value(req, 'ns'))
        routed = self._routes.get(key)
        if routed is None:
            # A pure function of the name, ns and the configured upstreams: worked
            # out once per name, not on every request (bounded: names come from
            # clients).
            if len(self._routes) >= ROUTES_KEPT:
                self._routes.clear()
            route = self.upstreams.route(*key)
            routed = self._routes[key] = (route, namespace_header(route),
                                          not route.proxied or route.allowed)
        route, headers, readable = routed
        req.context.route = route
        for k, v in headers.items():
            resp.set_header(k, v)
        check_write(route, req.method, self.upstreams.upstreams)
        if not readable:
            check_read(route)

    async def process_startup(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        if self.cache.evictor.capped:
            # With the purge's rhythm: a cap lowered at a restart applies without
            # waiting for new pulls (each fetch also checks, evict.py).
            self._evictions = asyncio.get_running_loop().create_task(self._evict())

    async def _evict(self) -> None:
        while True:
            try:
                await self.cache.evictor.evict_all()
            except StoreUnavailable as ex:  # the next round tries again
                log.warning('cache eviction round skipped: %s', ex)
            except Exception:
                log.exception('cache eviction round failed')
            await asyncio.sleep(self.purge_interval)

    async def process_shutdown(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        if self._evictions is not None:
            self._evictions.cancel()
        await self.cache.aclose()


def route_of(req: falcon.asgi.Request) -> Route | None:
    """The request's route when it may reach an upstream, else None."""
    route: Route | None = getattr(req.context, 'route', None)
    return route if route is not None and route.upstream is not None else None


def warning(text: str) -> str:
    """A ``Warning`` header value as the spec's §Warnings shows it: code 299."""
    return '299 - "{}"'.format(text.replace('"', "'").replace('\\', '/')[:400])


class CutOff:
    """ASGI wrapper: a response tailing a pull-through download that failed (bad
    bytes, upstream cut off) ends here, short of its Content-Length, so the client
    sees an incomplete body (RFC 9112 §6.3) and the log one line, not a traceback."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive,
                       send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except FetchFailed as ex:
            log.warning('%s %s: response cut off: %s', scope.get('method'),
                        scope.get('path'), ex)
