"""The web view as its own Falcon app, mounted at ``/ui`` beside the API.

A separate app because its answers differ in kind: HTML pages (errors too), its
own security headers, and access decided per page by the API's rules (see
viewer.py) instead of by the API's per-route middleware.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import falcon
import falcon.asgi
from falcon.routing import CompiledRouter

from oci_ref.api.access import AccessControl
from oci_ref.errors import ErrorCode, RegistryError
from oci_ref.reference import is_valid_name
from oci_ref.registry import Registry
from oci_ref.storage import StoreUnavailable
from oci_ref.ui.csrf import Csrf
from oci_ref.ui.model import Model
from oci_ref.ui.mount import PREFIX
from oci_ref.ui.render import SECURITY_HEADERS, render
from oci_ref.ui.resources import (
    Context,
    Delete,
    Login,
    Manifest,
    Referrers,
    Repositories,
    Repository,
    Static,
)
from oci_ref.ui.viewer import viewer_of

if TYPE_CHECKING:
    from oci_ref.upstream.config import Upstream

log = logging.getLogger('oci_ref')
_PLACEHOLDER = 'n'
# Repository names hold slashes, so (as in oci_ref/routing.py) the name is what lies
# between /ui/r/ and a fixed suffix; "/-/" cannot be part of a name (every path
# component starts with [a-z0-9]).
_SPLIT = re.compile(r'/ui/r/(?P<name>.+?)(?P<suffix>/|/-/m/[^/]+|/-/referrers/[^/]+'
                    r'|/-/delete|)')


class UIRouter(CompiledRouter):
    def find(self, uri: str, req: Any = None) -> Any:
        m = _SPLIT.fullmatch(uri)
        if m is None:
            return super().find(uri, req)
        found = super().find(f'/ui/r/{_PLACEHOLDER}{m["suffix"]}', req)
        if found is None or not is_valid_name(m['name']):
            return None
        resource, method_map, params, template = found
        params['name'] = m['name']
        return resource, method_map, params, template


class Pages:
    """Middleware: who is looking (every page but the static files), and the
    security headers on every answer, error pages included."""

    def __init__(self, control: AccessControl):
        self.control = control

    async def process_resource(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                               resource: Any, params: dict[str, Any]) -> None:
        if not isinstance(resource, Static):
            req.context.viewer = await viewer_of(req, self.control)

    async def process_response(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                               resource: Any, req_succeeded: bool) -> None:
        for key, value in SECURITY_HEADERS.items():
            if key != 'Cache-Control' or not resp.get_header(key):
                resp.set_header(key, value)


_NOT_FOUND = {ErrorCode.NAME_UNKNOWN, ErrorCode.MANIFEST_UNKNOWN, ErrorCode.NAME_INVALID,
              ErrorCode.BLOB_UNKNOWN}


async def _error_page(req: falcon.asgi.Request, resp: falcon.asgi.Response,
                      ex: Exception, params: dict[str, Any]) -> None:
    status, title, detail, headers = 500, 'Something went wrong', '', {}
    if isinstance(ex, RegistryError):
        entry = ex.entries[0]
        status = 404 if entry.code in _NOT_FOUND else ex.status
        title = 'Not found' if status == 404 else entry.message
        detail = '' if status == 404 else str((entry.detail or {}).get('rule', ''))
        headers = ex.headers
    elif isinstance(ex, falcon.HTTPError):
        if isinstance(ex, falcon.HTTPSeeOther | falcon.HTTPFound):
            raise ex  # redirects are answers, not errors
        status, title = ex.status_code, ex.title or 'Error'
        headers = dict(ex.headers or {})
    elif isinstance(ex, StoreUnavailable):
        # As the API answers it: the store is named, the client may retry.
        status, title, headers = 503, 'Storage unavailable', {'Retry-After': '5'}
        detail = f'{ex.store}: {ex.reason}'
    else:
        log.exception('web view: unhandled error on %s %s', req.method, req.path)
    resp.status = status
    for key, value in headers.items():
        resp.set_header(key, value)
    resp.content_type = 'text/html; charset=utf-8'
    resp.data = render('error.html', viewer=getattr(req.context, 'viewer', None),
                       status=status, title=title, detail=detail)


def ui_app(registry: Registry, control: AccessControl,
           upstreams: Sequence[Upstream] = ()) -> falcon.asgi.App:
    """The web view; its CSRF key lives in the metadata store (blocking: built in a
    thread). Repositories under an upstream's prefix are marked as its cache."""
    cached_by = None
    if upstreams:
        from oci_ref.upstream.routing import reserved_by

        def cached_by(name: str) -> str | None:
            upstream = reserved_by(name, upstreams)
            return upstream.name if upstream is not None else None

    ctx = Context(Model(registry, cached_by), Csrf.from_store(registry.meta))
    app = falcon.asgi.App(router=UIRouter(), middleware=[Pages(control)],
                          cors_enable=False)
    app.req_options.strip_url_path_trailing_slash = False
    app.req_options.keep_blank_qs_values = True
    app.req_options.auto_parse_qs_csv = False
    app.add_route(PREFIX, _Home())
    app.add_route(f'{PREFIX}/', Repositories(ctx))
    app.add_route(f'{PREFIX}/login', Login())
    app.add_route(PREFIX + '/static/{filename}', Static())
    app.add_route(f'{PREFIX}/r/{_PLACEHOLDER}', _ToRepository())
    app.add_route(f'{PREFIX}/r/{_PLACEHOLDER}/', Repository(ctx))
    app.add_route(PREFIX + f'/r/{_PLACEHOLDER}/-/m/{{reference}}', Manifest(ctx))
    app.add_route(PREFIX + f'/r/{_PLACEHOLDER}/-/referrers/{{digest}}', Referrers(ctx))
    app.add_route(f'{PREFIX}/r/{_PLACEHOLDER}/-/delete', Delete(ctx))
    app.add_error_handler(Exception, _error_page)
    app.add_error_handler(falcon.HTTPError, _error_page)
    app.add_error_handler(RegistryError, _error_page)
    return app


class _Home:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """ui: GET /ui - to /ui/."""
        raise falcon.HTTPMovedPermanently('/ui/')


class _ToRepository:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                     name: str) -> None:
        """ui: GET /ui/r/<name> - to /ui/r/<name>/."""
        raise falcon.HTTPMovedPermanently(f'/ui/r/{name}/')
