"""The web view's pages: one resource per view. They read through ``Model`` and
render templates; access is decided per request by the ``Viewer`` (the API's
rules), and a repository the viewer may not pull looks exactly like one that does
not exist."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl

import falcon
import falcon.asgi

from oci_ref.errors import ErrorCode, RegistryError
from oci_ref.reference import is_digest_reference
from oci_ref.ui.csrf import Csrf, same_origin
from oci_ref.ui.graph import layout
from oci_ref.ui.model import Model
from oci_ref.ui.render import render, ui_path
from oci_ref.ui.viewer import Viewer, challenge

REPOS_PER_PAGE = 50
TAGS_PER_PAGE = 100
PAGE_MAX = 1000
FORM_MAX = 8 * 1024


@dataclass(frozen=True)
class Context:
    """What every page needs: the model, the CSRF keys, the static switches."""

    model: Model
    csrf: Csrf


def _viewer(req: falcon.asgi.Request) -> Viewer:
    viewer: Viewer = req.context.viewer
    return viewer


def _number(req: falcon.asgi.Request, key: str, default: int, maximum: int) -> int:
    raw = req.get_param(key) or ''
    if not raw.isascii() or not raw.isdigit() or len(raw) > 6:
        return default
    return max(1, min(int(raw), maximum))


def _page(resp: falcon.asgi.Response, req: falcon.asgi.Request, template: str,
          status: int = 200, **context: Any) -> None:
    resp.status = status
    resp.content_type = 'text/html; charset=utf-8'
    resp.data = render(template, viewer=_viewer(req), **context)


def not_found(name: str) -> RegistryError:
    return RegistryError(ErrorCode.NAME_UNKNOWN, detail={'name': name})


def _readable(req: falcon.asgi.Request, name: str) -> Viewer:
    """The viewer, if they may pull ``name``: else a challenge (anonymous) or the
    same 404 an unknown repository gets (nothing of a private one shows)."""
    viewer = _viewer(req)
    if viewer.may_pull(name):
        return viewer
    if viewer.user is None and viewer.auth_required:
        raise challenge()
    raise not_found(name)


def _pull_host(req: falcon.asgi.Request) -> str:
    return req.netloc


class Repositories:
    def __init__(self, ctx: Context):
        self.ctx = ctx

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """ui: GET /ui/ - the repositories the viewer may pull, searchable, paged."""
        viewer = _viewer(req)
        if not viewer.may_list:
            if viewer.user is None and viewer.auth_required:
                raise challenge()
            _page(resp, req, 'repositories.html', 403, page=None, q='', n=REPOS_PER_PAGE,
                  last=None)
            return
        q = (req.get_param('q') or '')[:200]
        n = _number(req, 'n', REPOS_PER_PAGE, PAGE_MAX)
        last = req.get_param('last') or None
        page = await self.ctx.model.repositories(viewer.may_pull, q, last, n)
        _page(resp, req, 'repositories.html', page=page, q=q, n=n, last=last,
              caching=self.ctx.model.caching)


class Login:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """ui: GET /ui/login - asks the browser for credentials (Basic), then home."""
        viewer = _viewer(req)
        if viewer.user is None and viewer.auth_required:
            raise challenge()
        raise falcon.HTTPSeeOther('/ui/')


class Repository:
    def __init__(self, ctx: Context):
        self.ctx = ctx

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                     name: str) -> None:
        """ui: GET /ui/r/<name>/ - tags, sortable by name or push time, paged."""
        viewer = _readable(req, name)
        model = self.ctx.model
        if not await model.repository_exists(name):
            raise not_found(name)
        sort = 'pushed' if req.get_param('sort') == 'pushed' else 'name'
        order = req.get_param('order')
        if order not in ('asc', 'desc'):
            order = 'desc' if sort == 'pushed' else 'asc'
        n = _number(req, 'n', TAGS_PER_PAGE, PAGE_MAX)
        tags = await model.tags(name, by_pushed=sort == 'pushed',
                                descending=order == 'desc',
                                page=_number(req, 'page', 1, 10**6), per_page=n)
        may_delete = viewer.may('delete', name) and model.deletes_enabled('tag', name)
        _page(resp, req, 'repository.html', name=name, tags=tags, sort=sort, order=order,
              n=n, may_delete=may_delete, deleted=(req.get_param('deleted') or '')[:200],
              cached_from=model.cached_from(name))


class Manifest:
    def __init__(self, ctx: Context):
        self.ctx = ctx

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                     name: str, reference: str) -> None:
        """ui: GET /ui/r/<name>/-/m/<reference> - the descriptor tree, raw JSON with
        the validator's verdict, pull commands, referrers."""
        viewer = _readable(req, name)
        model = self.ctx.model
        view = await model.manifest(name, reference)
        may_delete = viewer.may('delete', name)
        _page(resp, req, 'manifest.html', name=name, m=view, host=_pull_host(req),
              tls=req.scheme == 'https',
              delete_manifest=may_delete and model.deletes_enabled(view.digest, name),
              delete_tags=may_delete and model.deletes_enabled('tag', name))


class Referrers:
    def __init__(self, ctx: Context):
        self.ctx = ctx

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                     name: str, digest: str) -> None:
        """ui: GET /ui/r/<name>/-/referrers/<digest> - the referrer graph (SVG)."""
        _readable(req, name)
        if not is_digest_reference(digest):
            raise RegistryError(ErrorCode.MANIFEST_UNKNOWN,
                                detail={'reference': digest[:200]})
        graph = await self.ctx.model.graph(name, digest)
        referrers = await self.ctx.model.referrers(name, graph.root)
        _page(resp, req, 'referrers.html', name=name, graph=graph, drawing=layout(graph),
              referrers=referrers)


class Delete:
    """A confirmation page (GET) and the delete itself (POST, CSRF-checked)."""

    def __init__(self, ctx: Context):
        self.ctx = ctx

    def _allowed(self, req: falcon.asgi.Request, name: str, reference: str) -> Viewer:
        viewer = _readable(req, name)
        if not viewer.may('delete', name):
            raise RegistryError(ErrorCode.DENIED, 'you may not delete in this repository',
                                detail={'name': name})
        upstream = self.ctx.model.cached_from(name)
        if upstream is not None:
            raise RegistryError(ErrorCode.UNSUPPORTED,
                                f'a pull-through cache of {upstream}: its content is '
                                'evicted, not deleted', status=405,
                                detail={'name': name, 'upstream': upstream})
        if not self.ctx.model.deletes_enabled(reference, name):
            raise RegistryError(ErrorCode.UNSUPPORTED, 'deletes are disabled',
                                detail={'spec': 'distribution-spec §Content Management'})
        return viewer

    def _token(self, viewer: Viewer, name: str, reference: str) -> str:
        return self.ctx.csrf.issue(viewer.user or '', 'delete', name, reference)

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                     name: str) -> None:
        """ui: GET /ui/r/<name>/-/delete?reference= - asks to confirm."""
        reference = (req.get_param('reference') or '')[:200]
        viewer = self._allowed(req, name, reference)
        view = await self.ctx.model.manifest(name, reference)
        _page(resp, req, 'delete.html', name=name, reference=reference, m=view,
              csrf=self._token(viewer, name, reference))

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                      name: str) -> None:
        """ui: POST /ui/r/<name>/-/delete - end-9 for the confirmed reference."""
        if not same_origin(req.get_header('Origin'), req.get_header('Sec-Fetch-Site'),
                           req.netloc, req.scheme):
            raise RegistryError(ErrorCode.DENIED, 'cross-site form posts are refused')
        raw = await req.stream.read(FORM_MAX + 1)
        if len(raw) > FORM_MAX:
            raise RegistryError(ErrorCode.SIZE_INVALID, 'form too large', status=413)
        form = dict(parse_qsl(raw.decode('utf-8', 'replace')))
        reference = form.get('reference', '')[:200]
        viewer = self._allowed(req, name, reference)
        if not self.ctx.csrf.valid(form.get('csrf', ''), viewer.user or '', 'delete',
                                   name, reference):
            raise RegistryError(ErrorCode.DENIED,
                                'the confirmation expired or was not ours: try again')
        await self.ctx.model.delete(name, reference)
        raise falcon.HTTPSeeOther(ui_path(name) + '?deleted=' +
                                  falcon.uri.encode_value(reference))


class Static:
    """The stylesheet and icon: packaged files, read once."""

    TYPES = {'.css': 'text/css; charset=utf-8', '.svg': 'image/svg+xml'}

    def __init__(self) -> None:
        folder = resources.files('oci_ref.ui').joinpath('static')
        self.files = {f.name: f.read_bytes() for f in folder.iterdir()
                      if f.name[-4:] in self.TYPES}

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                     filename: str) -> None:
        """ui: GET /ui/static/<file>."""
        data = self.files.get(filename)
        if data is None:
            raise falcon.HTTPNotFound()
        resp.content_type = self.TYPES[filename[-4:]]
        resp.data = data
        resp.set_header('Cache-Control', 'public, max-age=3600')
