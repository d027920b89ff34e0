"""Blobs (end-2, end-10) and blob uploads (end-4a/4b/4c, end-5, end-6, end-11, end-13,
end-14)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import falcon
import falcon.asgi

from oci_ref.api.mirror import UNKNOWN_OWN, route_of
from oci_ref.errors import ErrorCode, RegistryError
from oci_ref.hooks import Notifier
from oci_ref.http import (
    RangeNotSatisfiable,
    content_length,
    parse_content_range,
    parse_range,
    query_value,
    query_values,
    request_body,
    request_info,
)
from oci_ref.reference import Digest, parse_algorithm
from oci_ref.registry import Registry, blob_location, upload_location, upload_range
from oci_ref.storage.interfaces import Upload

if TYPE_CHECKING:  # loaded only with upstreams (oci_ref/app.py)
    from oci_ref.upstream.cache import Fetch, PullThrough


class Blob:
    def __init__(self, registry: Registry, notifier: Notifier,
                 cache: PullThrough | None = None):
        self.registry = registry
        self.notifier = notifier
        self.cache = cache

    async def _size(self, req: falcon.asgi.Request, name: str, digest: str
                    ) -> tuple[Digest, int, Fetch | None]:
        """Own content, or (issue 13) the upstream's through the cache, with the
        download to tail while it is being fetched."""
        route = route_of(req)
        if self.cache is None or route is None:
            return (*await self.registry.blob_size(name, digest), None)
        if route.fallback:
            try:
                return (*await self.registry.blob_size(name, digest), None)
            except RegistryError as ex:
                if ex.code not in UNKNOWN_OWN:
                    raise
        return await self.cache.blob_size(route, digest)

    async def _open(self, req: falcon.asgi.Request, d: Digest, start: int, length: int
                    ) -> AsyncIterator[bytes]:
        try:
            return await self.registry.read_blob(d, start, length)
        except RegistryError as ex:
            route = route_of(req)
            if (ex.code != ErrorCode.BLOB_UNKNOWN or self.cache is None or route is None
                    or not route.proxied):
                raise
        # A cached blob evicted between its size and its opening (evict.py), or its
        # file lost: the cache's link goes (if eviction left it) and the blob is
        # fetched again, as for any miss.
        assert route.cache_name is not None
        await self.registry.meta.unlink_blob(route.cache_name, str(d))
        _, _, fetch = await self.cache.blob_size(route, str(d))
        return await self.cache.read_blob(d, fetch, start, length)

    def _headers(self, resp: falcon.asgi.Response, digest: Digest) -> None:
        resp.content_type = 'application/octet-stream'
        resp.set_header('Docker-Content-Digest', str(digest))
        resp.set_header('Accept-Ranges', 'bytes')
        resp.set_header('ETag', f'"{digest}"')
        # Content under a digest never changes (§Pulling blobs: SHOULD cache).
        resp.set_header('Cache-Control', 'max-age=31536000')

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                     name: str, digest: str) -> None:
        """end-2: GET /v2/<name>/blobs/<digest> (RFC 9110 single ranges → 206)."""
        d, size, fetch = await self._size(req, name, digest)
        self._headers(resp, d)
        url = await self.registry.blob_redirect(d)
        if url is not None:
            # §Pulling blobs: the registry MAY redirect; the presigned URL carries
            # its own authority (clients drop Authorization across hosts), and
            # answers Range itself.
            resp.status = falcon.HTTP_307
            resp.set_header('Location', url)
            resp.set_header('Cache-Control', 'no-store')  # the URL expires
            resp.content_length = 0
            self.notifier.emit('pull', name, digest=str(d), size=size,
                               media_type='application/octet-stream',
                               request=request_info(req))
            return
        try:
            rng = parse_range(req.get_header('Range'), size)
        except RangeNotSatisfiable:
            raise RegistryError(
                ErrorCode.UNSUPPORTED,
                'requested range not satisfiable',
                detail={'range': (req.get_header('Range') or '')[:100], 'size': size},
                status=416,
                headers={'Content-Range': f'bytes */{size}'},
            ) from None
        start, length = 0, size
        if rng is not None:
            start, length = rng[0], rng[1] - rng[0] + 1
            resp.status = falcon.HTTP_206
            resp.set_header('Content-Range', f'bytes {rng[0]}-{rng[1]}/{size}')
        if fetch is None:
            resp.stream = await self._open(req, d, start, length)
        else:
            assert self.cache is not None
            resp.stream = await self.cache.read_blob(d, fetch, start, length)
        resp.content_length = length
        self.notifier.emit('pull', name, digest=str(d), size=size,
                           media_type='application/octet-stream',
                           request=request_info(req))

    async def on_head(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                      name: str, digest: str) -> None:
        """end-2: HEAD /v2/<name>/blobs/<digest> (headers of GET, no body)."""
        d, size, _ = await self._size(req, name, digest)
        self._headers(resp, d)
        resp.content_length = size

    async def on_delete(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                        name: str, digest: str) -> None:
        """end-10: DELETE /v2/<name>/blobs/<digest> → 202."""
        await self.registry.delete_blob(name, digest)
        resp.status = falcon.HTTP_202
        resp.content_length = 0
        self.notifier.emit('delete', name, digest=digest, request=request_info(req))


class BlobUploads:
    def __init__(self, registry: Registry, notifier: Notifier):
        self.registry = registry
        self.notifier = notifier

    @staticmethod
    def _session_headers(resp: falcon.asgi.Response, upload: Upload) -> None:
        resp.set_header('Location', upload_location(upload.repo, upload.id))
        resp.set_header('Range', upload_range(upload.size))
        resp.set_header('Docker-Upload-UUID', upload.id)
        resp.set_header('Blob-Upload-Session-ID', upload.id)

    @staticmethod
    def _created(resp: falcon.asgi.Response, name: str, digest: Digest) -> None:
        resp.status = falcon.HTTP_201
        resp.set_header('Location', blob_location(name, digest))
        resp.set_header('Docker-Content-Digest', str(digest))
        resp.content_length = 0

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                      name: str) -> None:
        """end-4a: POST /v2/<name>/blobs/uploads/ → 202 session;
        end-4b: …?digest=<digest> with the blob as body → 201;
        end-4c: …?digest-algorithm=<alg> → 202 session hashed with <alg>;
        end-11: …?mount=<digest>[&from=<other>] → 201, or 202 session if not mountable.
        """
        mount = query_value(req, 'mount')
        if mount is not None:
            source = query_value(req, 'from')
            mounted = await self.registry.mount_blob(
                name, mount, source, getattr(req.context, 'can_pull', None))
            if mounted is not None:
                self._created(resp, name, mounted)
                self.notifier.emit('mount', name, digest=str(mounted), source=source,
                                   request=request_info(req))
                return
        else:
            digests = query_values(req, 'digest')
            if digests:
                digest = await self.registry.push_monolithic(
                    name, digests, request_body(req)
                )
                self._created(resp, name, digest)
                self.notifier.emit('push', name, digest=str(digest),
                                   request=request_info(req))
                return
        algorithm = query_value(req, 'digest-algorithm')
        upload = await self.registry.start_upload(
            name, parse_algorithm(algorithm) if algorithm else None
        )
        resp.status = falcon.HTTP_202
        self._session_headers(resp, upload)
        chunk_min = self.registry.chunk_min_length
        if chunk_min:
            # §Pushing a blob in chunks: the efficient chunk size (S3's part
            # minimum); smaller chunks still work, combined in the store.
            resp.set_header('OCI-Chunk-Min-Length', str(chunk_min))
        resp.content_length = 0

    async def on_get_session(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                             name: str, session_id: str) -> None:
        """end-13: GET /v2/<name>/blobs/uploads/<reference> → 204 with Range."""
        upload = await self.registry.get_upload(name, session_id)
        resp.status = falcon.HTTP_204
        self._session_headers(resp, upload)

    async def on_patch_session(self, req: falcon.asgi.Request,
                               resp: falcon.asgi.Response, name: str,
                               session_id: str) -> None:
        """end-5: PATCH /v2/<name>/blobs/uploads/<reference> → 202 (416 if out of order)."""
        upload = await self.registry.append_chunk(
            name,
            session_id,
            request_body(req),
            parse_content_range(req.get_header('Content-Range')),
            content_length(req),
        )
        resp.status = falcon.HTTP_202
        self._session_headers(resp, upload)
        resp.content_length = 0

    async def on_put_session(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                             name: str, session_id: str) -> None:
        """end-6: PUT /v2/<name>/blobs/uploads/<reference>?digest=<digest> → 201."""
        digest = await self.registry.finish_upload(
            name,
            session_id,
            query_values(req, 'digest'),
            request_body(req),
            parse_content_range(req.get_header('Content-Range')),
            content_length(req),
        )
        self._created(resp, name, digest)
        self.notifier.emit('push', name, digest=str(digest), request=request_info(req))

    async def on_delete_session(self, req: falcon.asgi.Request,
                                resp: falcon.asgi.Response, name: str,
                                session_id: str) -> None:
        """end-14: DELETE /v2/<name>/blobs/uploads/<reference> → 204."""
        await self.registry.cancel_upload(name, session_id)
        resp.status = falcon.HTTP_204
