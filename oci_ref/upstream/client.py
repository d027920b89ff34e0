"""An async client for one upstream registry (httpx): manifests, blobs, tags and
referrers, byte-exact, with every failure mapped to oci_ref.upstream.errors.

Manifests are read whole (they are capped); blobs stream as an async iterator of
chunks, checked against their digest by VerifyingStream. Redirects are followed by
hand: ``Authorization`` goes only to the upstream's own origin, never to the host a
blob is redirected to (a CDN, a presigned URL).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpcore
import httpx

from oci_ref.reference import ALGORITHMS, Digest
from oci_ref.upstream.auth import UpstreamAuth
from oci_ref.upstream.config import Upstream
from oci_ref.upstream.credentials import CredentialStore
from oci_ref.upstream.errors import (
    Kind,
    UpstreamAuthRefused,
    UpstreamBadContent,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from oci_ref.upstream.verify import VerifyingStream

if TYPE_CHECKING:
    from hashlib import _Hash

# What clients send (containerd, containers/image): every manifest type, so that the
# upstream answers with the bytes it stores and never converts.
MANIFEST_ACCEPT = ', '.join([
    'application/vnd.oci.image.index.v1+json',
    'application/vnd.oci.image.manifest.v1+json',
    'application/vnd.docker.distribution.manifest.list.v2+json',
    'application/vnd.docker.distribution.manifest.v2+json',
    '*/*;q=0.8',
])
INDEX = 'application/vnd.oci.image.index.v1+json'
MANIFEST_MAX = 4 * 1024 * 1024
JSON_MAX = 16 * 1024 * 1024
CHUNK = 1 << 16
# One socket read of a blob body: httpcore's default (64 KiB) makes each read a trip
# through anyio's stream (resume and pause of the transport), h11 and httpx in
# Python, about 6 ms of CPU per MiB in all on a cold pull-through; one read takes
# what the transport has gathered (uvloop reads up to 256 KiB at a time).
READ_BYTES = 1 << 20
# A blob at least this large is read past httpx (UpstreamClient._body).
DIRECT_MIN = 4 << 20
MAX_REDIRECTS = 5
_LINK = re.compile(r'<([^>]*)>\s*;\s*rel="?next"?')
# httpx logs every request URL at INFO; a redirect URL (a presigned CDN link) is a
# credential, and no URL with a token may reach a log.
logging.getLogger('httpx').setLevel(logging.WARNING)
logging.getLogger('httpcore').setLevel(logging.WARNING)


def _large_reads() -> None:
    """Raise httpcore's read size (a class attribute, with no option to set it). A
    newer httpcore without it keeps its own default: only slower."""
    try:
        from httpcore._async.http11 import AsyncHTTP11Connection
    except ImportError:
        return
    if getattr(AsyncHTTP11Connection, 'READ_NUM_BYTES', READ_BYTES) < READ_BYTES:
        AsyncHTTP11Connection.READ_NUM_BYTES = READ_BYTES


_large_reads()


def _mapped(ex: httpx.HTTPError, upstream: str, kind: Kind) -> UpstreamError:
    """A transport failure as an UpstreamError (no URL: it may carry a token)."""
    if isinstance(ex, httpx.TimeoutException):
        return UpstreamTimeout(upstream, f'timed out ({type(ex).__name__})', kind=kind)
    if isinstance(ex, httpx.ConnectError):
        if 'CERTIFICATE_VERIFY_FAILED' in str(ex):
            return UpstreamUnreachable(upstream, 'its TLS certificate is not trusted '
                                       '(see tls_verify and ca_file)', kind=kind)
        return UpstreamUnreachable(upstream, 'cannot connect', kind=kind)
    return UpstreamBadResponse(upstream, f'broke off the response ({type(ex).__name__})',
                               kind=kind)


async def send(http: httpx.AsyncClient, request: httpx.Request, upstream: str,
               kind: Kind, *, stream: bool) -> httpx.Response:
    try:
        return await http.send(request, stream=stream)
    except httpx.HTTPError as ex:
        raise _mapped(ex, upstream, kind) from None


async def _read_capped(response: httpx.Response, cap: int, upstream: str, kind: Kind,
                       what: str) -> bytes:
    length = response.headers.get('content-length')
    if length is not None and length.isdigit() and int(length) > cap:
        raise UpstreamBadResponse(upstream, f'{what} is larger than {cap} bytes',
                                  kind=kind)
    parts: list[bytes] = []
    total = 0
    try:
        async for chunk in response.aiter_bytes(CHUNK):
            total += len(chunk)
            if total > cap:
                raise UpstreamBadResponse(upstream, f'{what} is larger than {cap} bytes',
                                          kind=kind)
            parts.append(chunk)
    except httpx.HTTPError as ex:
        raise _mapped(ex, upstream, kind) from None
    return b''.join(parts)


@dataclass(frozen=True, slots=True)
class ManifestHead:
    digest: str
    media_type: str
    size: int


@dataclass(frozen=True, slots=True)
class Manifest:
    """A manifest as the upstream sent it: ``body`` is never re-serialised."""

    body: bytes
    media_type: str
    digest: str

    @property
    def size(self) -> int:
        return len(self.body)


@dataclass(frozen=True, slots=True)
class TagsPage:
    name: str
    tags: list[str]
    next_last: str | None  # the `last` of the next page (from Link), or None


@dataclass(frozen=True, slots=True)
class Referrers:
    """``source``: 'api' (the referrers API), 'tag' (the ``<alg>-<hex>`` fallback
    tag) or 'none' (neither: an empty index made here)."""

    body: bytes
    media_type: str
    source: str
    filtered: bool = False
    next_url: str | None = None


@dataclass
class BlobStream:
    """An open blob response. ``chunks`` is verified when it starts at 0 (or
    continues a hasher); ``size`` is the whole blob's size when known."""

    size: int | None
    offset: int
    chunks: AsyncIterator[bytes]
    verifying: bool

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.chunks.__aiter__()


def _tls(upstream: Upstream) -> ssl.SSLContext | bool:
    if not upstream.tls_verify:
        return False
    if upstream.ca_file is not None:
        return ssl.create_default_context(cafile=str(upstream.ca_file))
    return True


class UpstreamClient:
    """Pull operations against one upstream. Use as ``async with``."""

    def __init__(self, upstream: Upstream, *, environ: Mapping[str, str] | None = None,
                 manifest_max_bytes: int = MANIFEST_MAX,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.upstream = upstream
        self.name = upstream.name
        self.manifest_max_bytes = manifest_max_bytes
        timeout = httpx.Timeout(connect=upstream.connect_timeout,
                                read=upstream.read_timeout,
                                write=upstream.read_timeout,
                                pool=upstream.connect_timeout)
        self.http = httpx.AsyncClient(
            timeout=timeout, verify=_tls(upstream), follow_redirects=False,
            transport=transport, trust_env=False,
            headers={'User-Agent': 'oci-ref (pull-through cache)',
                     'Accept-Encoding': 'identity'},
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16))
        store = CredentialStore(upstream, os.environ if environ is None else environ)
        self.auth = UpstreamAuth(upstream, store, self.http)

    def __repr__(self) -> str:
        return f'UpstreamClient({self.name}, {self.upstream.url})'

    async def __aenter__(self) -> UpstreamClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    # ------------------------------------------------------------ plumbing ----
    async def _request(self, method: str, repository: str, path: str, kind: Kind, *,
                       headers: dict[str, str] | None = None,
                       params: dict[str, str] | None = None,
                       stream: bool = False, ok: tuple[int, ...] = (200,)
                       ) -> httpx.Response:
        """Send with authorization (answering one challenge), following redirects
        without credentials off the origin, and map every failure."""
        url = f'{self.upstream.url}/v2/{repository}/{path}'
        auth = await self.auth.headers(repository)
        retried = False
        while True:
            response = await self._follow(method, url, {**(headers or {}), **auth},
                                           params, kind, stream)
            if response.status_code != 401 or retried:
                break
            await response.aclose()
            retried = True
            self.auth.forget(repository)
            auth = await self.auth.answer(response, repository)
        if response.status_code in ok:
            return response
        try:
            raise await self._failure(response, repository, kind)
        finally:
            await response.aclose()

    async def _follow(self, method: str, url: str, headers: dict[str, str],
                      params: dict[str, str] | None, kind: Kind, stream: bool
                      ) -> httpx.Response:
        origin = urlsplit(self.upstream.url)[:2]
        for _ in range(MAX_REDIRECTS + 1):
            request = self.http.build_request(method, url, headers=headers, params=params)
            response = await send(self.http, request, self.name, kind, stream=stream)
            if response.status_code not in (301, 302, 303, 307, 308) or method not in (
                    'GET', 'HEAD'):
                return response
            location = response.headers.get('location')
            await response.aclose()
            if not location:
                raise UpstreamBadResponse(self.name, 'redirected without a Location',
                                          kind=kind)
            url, params = urljoin(str(request.url), location), None
            if urlsplit(url)[:2] != origin:
                # Credentials stay with the upstream (spec §Registry Proxying note).
                headers = {k: v for k, v in headers.items() if k.lower() != 'authorization'}
        raise UpstreamBadResponse(self.name, f'more than {MAX_REDIRECTS} redirects',
                                  kind=kind)

    async def _failure(self, response: httpx.Response, repository: str, kind: Kind
                       ) -> UpstreamError:
        status = response.status_code
        code = ''
        if response.request.method != 'HEAD':
            try:
                body = await _read_capped(response, 65536, self.name, kind, 'error body')
                code = json.loads(body)['errors'][0]['code']
            except (UpstreamError, ValueError, KeyError, IndexError, TypeError):
                code = ''
        extra: dict[str, Any] = {'upstream_status': status, 'repository': repository}
        if isinstance(code, str) and code:
            extra['upstream_code'] = code[:64]
        if status == 404:
            return UpstreamNotFound(self.name, 'does not have it', kind=kind, **extra)
        if status == 429:
            return UpstreamRateLimited(self.name, 'is rate limiting us',
                                       retry_after=response.headers.get('retry-after'),
                                       kind=kind, **extra)
        if status in (401, 403):
            self.auth.forget(repository)
            return UpstreamAuthRefused(self.name, 'refused access to the repository',
                                       kind=kind, **extra)
        return UpstreamBadResponse(self.name, f'answered {status}', kind=kind, **extra)

    # ----------------------------------------------------------- manifests ----
    async def head_manifest(self, repository: str, reference: str) -> ManifestHead:
        """HEAD; a 405 (as containerd tolerates) or a response without
        ``Docker-Content-Digest`` falls back to GET."""
        try:
            response = await self._request('HEAD', repository, f'manifests/{reference}',
                                           'manifest', headers={'Accept': MANIFEST_ACCEPT})
        except UpstreamBadResponse as ex:
            if ex.detail.get('upstream_status') != 405:
                raise
            m = await self.get_manifest(repository, reference)
            return ManifestHead(m.digest, m.media_type, m.size)
        await response.aclose()
        digest = response.headers.get('docker-content-digest')
        length = response.headers.get('content-length', '')
        if not digest or not length.isdigit():
            m = await self.get_manifest(repository, reference)
            return ManifestHead(m.digest, m.media_type, m.size)
        if ':' in reference and digest != reference:
            raise UpstreamBadContent(self.name, f'answered {reference} with {digest}',
                                     kind='manifest', repository=repository)
        return ManifestHead(digest, response.headers.get('content-type', ''), int(length))

    async def get_manifest(self, repository: str, reference: str) -> Manifest:
        """GET, read whole (capped), digest checked: against the reference when it
        is a digest, else against ``Docker-Content-Digest`` when sent."""
        response = await self._request('GET', repository, f'manifests/{reference}',
                                       'manifest', headers={'Accept': MANIFEST_ACCEPT},
                                       stream=True)
        try:
            body = await _read_capped(response, self.manifest_max_bytes, self.name,
                                      'manifest', 'the manifest')
        finally:
            await response.aclose()
        claimed = reference if ':' in reference else response.headers.get(
            'docker-content-digest')
        algorithm = 'sha256'
        if claimed:
            algorithm = claimed.partition(':')[0]
            if algorithm not in ALGORITHMS:
                raise UpstreamBadContent(self.name, f'sent digest {claimed[:80]!r} of an '
                                         'unsupported algorithm', kind='manifest')
        actual = f'{algorithm}:{await asyncio.to_thread(_hex, algorithm, body)}'
        if claimed and actual != claimed:
            raise UpstreamBadContent(self.name, f'sent a manifest that is {actual}, '
                                     f'not {claimed}', kind='manifest',
                                     repository=repository)
        return Manifest(body, response.headers.get('content-type', ''), actual)

    # --------------------------------------------------------------- blobs ----
    @asynccontextmanager
    async def blob(self, repository: str, digest: str, *, start: int = 0,
                   size: int | None = None, hasher: _Hash | None = None
                   ) -> AsyncIterator[BlobStream]:
        """Open ``digest`` from byte ``start``. Verified when ``start`` is 0, or when
        ``hasher`` holds the hash of the first ``start`` bytes; ``size`` (from a
        descriptor) is checked against what the upstream announces and sends."""
        d = Digest.parse(digest)
        headers = {'Range': f'bytes={start}-'} if start else {}
        response = await self._request('GET', repository, f'blobs/{digest}', 'blob',
                                       headers=headers, stream=True, ok=(200, 206))
        try:
            total, skip = self._extent(response, start)
            if size is not None and total is not None and total != size:
                raise UpstreamBadContent(self.name, f'announced {total} bytes for '
                                         f'{digest}, not {size}', kind='blob',
                                         repository=repository)
            total = size if total is None else total
            raw = self._chunks(response, skip)
            verifying = start == 0 or hasher is not None
            chunks: AsyncIterator[bytes] = raw
            if verifying:
                chunks = VerifyingStream(raw, d, size=total, upstream=self.name,
                                         hasher=hasher, offset=start).__aiter__()
            yield BlobStream(total, start, chunks, verifying)
        finally:
            await response.aclose()

    def _extent(self, response: httpx.Response, start: int) -> tuple[int | None, int]:
        """(size of the whole blob if known, bytes to skip) of a 200 or 206."""
        if response.status_code == 206:
            m = re.fullmatch(r'bytes (\d+)-(\d+)/(\d+|\*)',
                             response.headers.get('content-range', ''))
            if m is None or int(m[1]) != start:
                raise UpstreamBadResponse(self.name, 'answered a Range request with a '
                                          'bad Content-Range', kind='blob')
            return (int(m[3]) if m[3] != '*' else None), 0
        length = response.headers.get('content-length', '')
        # A 200 to a Range request: the whole blob, of which we skip the start.
        return (int(length) if length.isdigit() else None), start

    async def _chunks(self, response: httpx.Response, skip: int) -> AsyncIterator[bytes]:
        try:
            # As received: no re-chunking into smaller pieces.
            async for chunk in self._body(response):
                if skip:
                    cut = min(skip, len(chunk))
                    chunk, skip = chunk[cut:], skip - cut
                if chunk:
                    yield chunk
        except httpx.HTTPError as ex:
            raise _mapped(ex, self.name, 'blob') from None
        except httpcore.TimeoutException:
            raise UpstreamTimeout(self.name, 'timed out (ReadTimeout)',
                                  kind='blob') from None
        except httpcore.NetworkError as ex:
            raise UpstreamBadResponse(self.name, 'broke off the response '
                                      f'({type(ex).__name__})', kind='blob') from None

    async def _body(self, response: httpx.Response) -> AsyncIterator[bytes]:
        """The body of a blob response. A plain HTTP/1.1 body of known length is
        read from the connection itself once h11 has handed over what it buffered
        with the headers: through httpx each read was copied three more times
        (h11's buffer in, h11's slice out, httpcore's bytes) and passed five
        layers of Python, the larger part of a cold pull-through's CPU. The
        connection then closes with the response (h11 never saw the body end):
        connection per large blob. Anything else goes through httpx, and a small
        blob too (its connection is kept for the next request)."""
        stream = response.extensions.get('network_stream')
        headers = response.headers
        length = headers.get('content-length', '')
        if (stream is None or not length.isdigit() or int(length) < DIRECT_MIN
                or 'transfer-encoding' in headers
                or headers.get('content-encoding', 'identity') != 'identity'
                or response.http_version != 'HTTP/1.1'):
            # Decoded: a Content-Encoding is the transfer's, the digest the blob's.
            async for chunk in response.aiter_bytes():
                yield chunk
            return
        remaining = int(length)
        raw = response.aiter_raw()
        try:
            # The first Data event empties h11's buffer (it extracts all it holds
            # up to the length): what follows is only on the connection.
            async for chunk in raw:
                remaining -= len(chunk)
                yield chunk
                break
            read_timeout = self.upstream.read_timeout
            while remaining > 0:
                chunk = await stream.read(min(READ_BYTES, remaining), read_timeout)
                if not chunk:
                    raise UpstreamBadResponse(
                        self.name, 'broke off the response (RemoteProtocolError)',
                        kind='blob')
                remaining -= len(chunk)
                yield chunk
        finally:
            close = getattr(raw, 'aclose', None)
            if close is not None:
                await close()

    # ---------------------------------------------------------- tags, refs ----
    async def list_tags(self, repository: str, n: int | None = None,
                        last: str | None = None) -> TagsPage:
        """One page of end-8 (``n``, ``last`` passed on); ``next_last`` from Link."""
        params = {k: str(v) for k, v in (('n', n), ('last', last)) if v is not None}
        response = await self._request('GET', repository, 'tags/list', 'tags',
                                       params=params, stream=True)
        try:
            body = await _read_capped(response, JSON_MAX, self.name, 'tags', 'tags list')
        finally:
            await response.aclose()
        try:
            data = json.loads(body)
            tags = [t for t in (data.get('tags') or []) if isinstance(t, str)]
            name = str(data.get('name') or repository)
        except (ValueError, AttributeError):
            raise UpstreamBadResponse(self.name, 'sent a tags list that is not JSON',
                                      kind='tags') from None
        next_url = self._next(response)
        next_last = parse_qs(urlsplit(next_url).query).get('last', [None])[0] \
            if next_url else None
        return TagsPage(name, tags, next_last)

    async def all_tags(self, repository: str, page_max: int = 10000
                       ) -> AsyncIterator[str]:
        last: str | None = None
        for _ in range(100000):
            page = await self.list_tags(repository, None if last is None else page_max,
                                        last)
            for tag in page.tags:
                yield tag
            if page.next_last is None or page.next_last == last or not page.tags:
                return
            last = page.next_last

    def _next(self, response: httpx.Response) -> str | None:
        """The Link rel=next target, only if it stays on the upstream's origin."""
        m = _LINK.search(response.headers.get('link', ''))
        if m is None:
            return None
        url = urljoin(str(response.request.url), m[1])
        if urlsplit(url)[:2] != urlsplit(self.upstream.url)[:2]:
            raise UpstreamBadResponse(self.name, 'sent a Link to another host',
                                      kind='tags')
        return url

    async def referrers(self, repository: str, digest: str,
                        artifact_type: str | None = None) -> Referrers:
        """end-12 at the upstream; on 404 the ``<alg>-<hex>`` tag schema (spec
        §Referrers tag schema), on 404 again an empty index."""
        d = Digest.parse(digest)
        params = {'artifactType': artifact_type} if artifact_type else None
        try:
            response = await self._request('GET', repository, f'referrers/{digest}',
                                           'referrers', params=params, stream=True)
        except UpstreamNotFound:
            response = None
        if response is not None:
            try:
                body = await _read_capped(response, self.manifest_max_bytes, self.name,
                                          'referrers', 'referrers index')
            finally:
                await response.aclose()
            filtered = 'artifactType' in response.headers.get('oci-filters-applied', '')
            return Referrers(body, response.headers.get('content-type', INDEX), 'api',
                             filtered, self._next(response))
        tag = f'{d.algorithm}-{d.encoded}'[:128]
        try:
            m = await self.get_manifest(repository, tag)
        except UpstreamNotFound:
            empty = json.dumps({'schemaVersion': 2, 'mediaType': INDEX,
                                'manifests': []}).encode()
            return Referrers(empty, INDEX, 'none')
        return Referrers(m.body, m.media_type or INDEX, 'tag')


def _hex(algorithm: str, data: bytes) -> str:
    return hashlib.new(algorithm, data).hexdigest()
