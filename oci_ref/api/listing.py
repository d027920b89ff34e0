"""Read-only listings: the version check (end-1), tags (end-8), referrers (end-12) and
the catalog."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import falcon
import falcon.asgi

from oci_ref.api.mirror import route_of, warning
from oci_ref.http import (
    INDEX_TYPE,
    media_type_param,
    page_size,
    query_value,
    set_next_link,
)
from oci_ref.manifest import schema_dir
from oci_ref.registry import Registry

if TYPE_CHECKING:  # loaded only with upstreams (oci_ref/app.py)
    from oci_ref.upstream.cache import PullThrough


class Ping:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """end-1: GET /v2/ → 200: this server implements the distribution spec."""
        resp.content_type = 'application/json'
        resp.data = b'{}'

    on_head = on_get


class OpenAPIDocument:
    """GET /openapi.yaml: the OpenAPI 3.1 description of this API (schemas/)."""

    def __init__(self) -> None:
        self._body: bytes | None = None

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        if self._body is None:
            # Read once, in a thread: the event loop never waits on the disk.
            self._body = await asyncio.to_thread((schema_dir() / 'openapi.yaml').read_bytes)
        resp.content_type = 'application/yaml'
        resp.data = self._body


class TagList:
    def __init__(self, registry: Registry, page_max: int,
                 cache: PullThrough | None = None):
        self.registry = registry
        self.page_max = page_max
        self.cache = cache

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                     name: str) -> None:
        """end-8a/8b: GET /v2/<name>/tags/list[?n=<n>][&last=<tag>] (ASCII order)."""
        n = page_size(req, self.page_max)
        route = route_of(req)
        if self.cache is not None and route is not None and (
                not route.fallback or not await self.registry.meta.repo_exists(name)):
            await self._upstream_tags(req, resp, name, n)
            return
        page = await self.registry.list_tags(name, query_value(req, 'last'), n)
        if page.more:
            set_next_link(resp, f'/v2/{name}/tags/list', {'n': n, 'last': page.items[-1]})
        resp.content_type = 'application/json'
        resp.data = json.dumps({'name': name, 'tags': page.items}).encode()

    async def _upstream_tags(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                             name: str, n: int) -> None:
        """Issue 13: a proxied repository's tags are the upstream's, paginated as
        the client asked (§Listing Tags)."""
        assert self.cache is not None
        route = route_of(req)
        assert route is not None
        asked = req.get_param('n') is not None
        page = await self.cache.tags(route, n if asked else None, query_value(req, 'last'))
        tags = page.tags[:n] if asked else page.tags
        if page.next_last is not None and tags:
            set_next_link(resp, f'/v2/{name}/tags/list', {'n': n, 'last': tags[-1]})
        resp.content_type = 'application/json'
        resp.data = json.dumps({'name': name, 'tags': tags}).encode()

    on_head = on_get  # RFC 9110 §9.1: HEAD wherever GET (spec §API defers to it)


class Catalog:
    def __init__(self, registry: Registry, page_max: int):
        self.registry = registry
        self.page_max = page_max

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """GET /v2/_catalog[?n=<n>][&last=<name>] (reserved by the spec; Docker's API)."""
        n = page_size(req, self.page_max)
        page = await self.registry.catalog(query_value(req, 'last'), n,
                                     getattr(req.context, 'can_pull', None))
        if page.more:
            set_next_link(resp, '/v2/_catalog', {'n': n, 'last': page.items[-1]})
        resp.content_type = 'application/json'
        resp.data = json.dumps({'repositories': page.items}).encode()

    on_head = on_get


class Referrers:
    def __init__(self, registry: Registry, page_max: int,
                 cache: PullThrough | None = None):
        self.registry = registry
        self.page_max = page_max
        self.cache = cache

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                     name: str, digest: str) -> None:
        """end-12a/12b: GET /v2/<name>/referrers/<digest>[?artifactType=<type>].

        Always 200 with an image index, even for an unknown repository or digest
        (§Listing Referrers: a registry that supports the API never answers 404).
        """
        artifact_type = media_type_param(req, 'artifactType') or None
        n = page_size(req, self.page_max)
        route = route_of(req)
        if self.cache is not None and route is not None and (
                not route.fallback or not await self.registry.meta.repo_exists(name)):
            # Issue 13: the upstream's referrers API, or its tag schema fallback.
            found, stale = await self.cache.referrers(route, digest, artifact_type)
            if stale is not None:
                resp.set_header('Warning', warning(stale))
            if found.filtered:
                resp.set_header('OCI-Filters-Applied', 'artifactType')
            resp.content_type = found.media_type or INDEX_TYPE
            resp.data = found.body
            return
        page = await self.registry.referrers(
            name, digest, artifact_type, query_value(req, 'last'), n
        )
        manifests: list[dict[str, Any]] = []
        for r in page.items:
            entry: dict[str, Any] = {
                'mediaType': r.media_type,
                'digest': r.digest,
                'size': r.size,
            }
            if r.artifact_type:
                entry['artifactType'] = r.artifact_type
            if r.annotations:
                entry['annotations'] = r.annotations
            manifests.append(entry)
        if artifact_type is not None:
            resp.set_header('OCI-Filters-Applied', 'artifactType')
        if page.more:
            set_next_link(
                resp,
                f'/v2/{name}/referrers/{digest}',
                {'n': n, 'last': page.items[-1].digest, 'artifactType': artifact_type},
            )
        resp.content_type = INDEX_TYPE
        resp.data = json.dumps(
            {'schemaVersion': 2, 'mediaType': INDEX_TYPE, 'manifests': manifests}
        ).encode()

    on_head = on_get
