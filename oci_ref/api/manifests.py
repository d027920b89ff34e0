"""Manifests (end-3, end-7, end-9)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import falcon
import falcon.asgi

from oci_ref.api.mirror import UNKNOWN_OWN, route_of, warning
from oci_ref.errors import ErrorCode, RegistryError
from oci_ref.hooks import Notifier
from oci_ref.http import content_length, query_values, request_body, request_info
from oci_ref.manifest import parse_manifest, schemas_loaded
from oci_ref.registry import PARSE_INLINE_MAX, Registry, manifest_location
from oci_ref.storage.interfaces import ManifestRecord

if TYPE_CHECKING:  # loaded only with upstreams (oci_ref/app.py)
    from oci_ref.upstream.cache import PullThrough


class Manifest:
    def __init__(self, registry: Registry, max_bytes: int, notifier: Notifier, *,
                 strict: bool = False, cache: PullThrough | None = None):
        self.registry = registry
        self.cache = cache
        self.max_bytes = max_bytes
        self.notifier = notifier
        # --strict: the image-spec's SHOULDs too. A policy of this front door, not of
        # the core: what the registry stores is what the spec allows either way.
        self.strict = strict

    @staticmethod
    def _headers(resp: falcon.asgi.Response, record: ManifestRecord) -> None:
        # §Pulling manifests: the stored type, verbatim (no charset parameter), and
        # whatever the Accept header asked for: we never answer 404/406 over Accept.
        resp.content_type = record.media_type
        resp.set_header('Docker-Content-Digest', record.digest)
        resp.set_header('ETag', f'"{record.digest}"')

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                     name: str, reference: str) -> None:
        """end-3: GET /v2/<name>/manifests/<reference>."""
        record = await self._record(req, resp, name, reference)
        self._headers(resp, record)
        resp.data = record.content
        if self.notifier.enabled:  # the event is built for nothing otherwise
            self.notifier.emit('pull', name, digest=record.digest, size=record.size,
                               media_type=record.media_type, tag=_tag(reference),
                               request=request_info(req))

    async def on_head(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                      name: str, reference: str) -> None:
        """end-3: HEAD /v2/<name>/manifests/<reference>."""
        record = await self._record(req, resp, name, reference)
        self._headers(resp, record)
        resp.content_length = record.size

    async def _record(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                      name: str, reference: str) -> ManifestRecord:
        """Own content, or (issue 13) the upstream's through the cache: a default
        upstream only when own storage has no such manifest."""
        route = route_of(req)
        if self.cache is None or route is None:
            return await self.registry.get_manifest(name, reference)
        if route.fallback:
            try:
                return await self.registry.get_manifest(name, reference)
            except RegistryError as ex:
                if ex.code not in UNKNOWN_OWN:
                    raise
        served = await self.cache.manifest(route, reference)
        if served.warning is not None:
            resp.set_header('Warning', warning(served.warning))
        return served.record

    async def on_put(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                     name: str, reference: str) -> None:
        """end-7: PUT /v2/<name>/manifests/<reference>[?tag=<tag>…] → 201."""
        body = await self._read_body(req)
        if self.strict:
            await self._check_strict(body, req.content_type)
        pushed = await self.registry.put_manifest(
            name, reference, body, req.content_type, query_values(req, 'tag')
        )
        resp.status = falcon.HTTP_201
        resp.set_header('Location', manifest_location(name, pushed.digest))
        resp.set_header('Docker-Content-Digest', str(pushed.digest))
        if pushed.subject:
            resp.set_header('OCI-Subject', pushed.subject)
        if pushed.tags:
            resp.set_header('OCI-Tag', ', '.join(pushed.tags))
        resp.content_length = 0
        self.notifier.emit('push', name, digest=str(pushed.digest), size=len(body),
                           media_type=pushed.media_type, tag=_tag(reference),
                           request=request_info(req))

    async def on_delete(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                        name: str, reference: str) -> None:
        """end-9: DELETE /v2/<name>/manifests/<reference> → 202 (a digest also drops
        every tag pointing at it)."""
        await self.registry.delete_manifest(name, reference)
        resp.status = falcon.HTTP_202
        resp.content_length = 0
        tag = _tag(reference)
        self.notifier.emit('delete', name, digest=None if tag else reference, tag=tag,
                           request=request_info(req))

    async def _read_body(self, req: falcon.asgi.Request) -> bytes:
        """The exact bytes (the digest is over them), never more than the limit."""
        declared = content_length(req)
        if declared is not None and declared > self.max_bytes:
            if declared <= 4 * self.max_bytes:
                # Read (and drop) a moderate excess so the client, still sending,
                # can read the 413 instead of a reset connection.
                async for _ in request_body(req):
                    pass
            raise self._too_large()
        body = bytearray()
        async for chunk in request_body(req):
            body += chunk
            if len(body) > self.max_bytes:
                raise self._too_large()
        return bytes(body)

    @staticmethod
    async def _check_strict(body: bytes, content_type: str | None) -> None:
        """Raise 400 MANIFEST_INVALID listing the failed rules, SHOULDs included."""
        # Big documents are parsed off the loop, and the first (it loads the schemas).
        if len(body) > PARSE_INLINE_MAX or not schemas_loaded():
            await asyncio.to_thread(parse_manifest, body, content_type, strict=True)
        else:
            parse_manifest(body, content_type, strict=True)

    def _too_large(self) -> RegistryError:
        return RegistryError(
            ErrorCode.MANIFEST_INVALID,
            f'manifest larger than {self.max_bytes} bytes',
            detail={
                'rule': f'manifests are at most {self.max_bytes} bytes',
                'spec': 'distribution-spec §Pushing Manifests',
            },
            status=413,
        )


def _tag(reference: str) -> str | None:
    return None if ':' in reference else reference
