"""Behaviours the distribution spec allows a registry, each on a switch
(``--variation NAME``), so a client can be tried against all of them.

Each variation acts on requests and answers at the ASGI level, around the registry;
``no-deletes`` and ``no-tag-pagination`` also set the registry's own switches
(:func:`adjust`). ``VARIATIONS`` holds, for each, the spec text that allows it and
what a client must do; the README table is made from it (``scripts``-free: see
tests/unit/test_variations.py, which checks the two agree).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import logging
import os
import re
import time
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlencode

from oci_ref.errors import ErrorCode, RegistryError, store_unavailable
from oci_ref.faults import ENDPOINT_KEY, scope_endpoint
from oci_ref.http import (
    API_VERSION,
    ASGIApp,
    RangeNotSatisfiable,
    Receive,
    Send,
    parse_range,
)
from oci_ref.storage.interfaces import StoreUnavailable

if TYPE_CHECKING:
    from oci_ref.config import Config
    from oci_ref.registry import Registry
    from oci_ref.storage.interfaces import MetadataStore

Headers = list[tuple[bytes, bytes]]
VARIATION_KEY = 'oci_ref.variation'
# Set on a request to the redirect target that carried credentials it must not.
LEAKED_AUTH_KEY = 'oci_ref.authorization_forwarded'
REDIRECT_PATH = '/redirected/'
REDIRECT_TTL = 300
REDIRECT_KEY = 'blob-redirect'  # its name in the metadata store's signing_keys
WARNING = ('299 - "oci-ref: the warnings variation is on: a client SHOULD show this '
           'text to its user (distribution-spec, Warnings)"')


@dataclass(frozen=True)
class Variation:
    name: str
    spec: str  # the spec text that allows it
    client: str  # what a client must do


VARIATIONS = {v.name: v for v in (
    Variation('no-referrers',
              'Listing Referrers: "A `404 Not Found` response indicates the registry '
              'does not support the referrers API"; Pushing Manifests with Subject: '
              'a registry that does not process `subject` returns no `OCI-Subject`',
              'on 404 from the referrers API, fall back to the referrers tag schema '
              '(`<alg>-<ref>` tag); after a push with `subject` and no `OCI-Subject` '
              'header, update that tag itself'),
    Variation('no-deletes',
              'Deleting tags / manifests / blobs: "If the registry has disabled '
              'deletion ... it MUST return 405 Method Not Allowed" (tags: 400 or 405)',
              'treat 405 on DELETE as "deletion disabled", not as a failure to retry'),
    Variation('mount-202',
              'Mounting a blob from another repository: "if a registry does not '
              'support cross-repository mounting or is unable to mount the requested '
              'blob, it SHOULD return a `202`"',
              'on 202 to a mount, upload the blob through the session in `Location`'),
    Variation('blob-redirect',
              'Pulling a Layer: "This endpoint MAY issue a 307 (302 for <HTTP 1.1) '
              'redirect to another service for downloading the layer and clients '
              'SHOULD be prepared to handle redirects"',
              'follow the 307 to the other host (here 127.0.0.2) and not send it the '
              'registry credentials: the target answers 400 to an Authorization '
              'header, as presigned-URL stores do'),
    Variation('absolute-location',
              'Pushing blobs: the `Location` "MAY be absolute (containing the protocol '
              'and/or hostname), or it MAY be relative (containing just the URL '
              'path)" (RFC 7231 §7.1.2)',
              'resolve `Location` against the request URL whichever form it has'),
    Variation('no-tag-pagination',
              'Listing Tags: `n` and `last` were optional in earlier versions of the '
              'spec and clients "SHOULD prefer the `Link` header"; a registry returns '
              'a `Link` only "if more tags are available" (this bends v1.1: `n` is '
              'ignored, as older registries do)',
              'accept a full list without `Link`, more tags than `n`, and not loop '
              'asking for the next page'),
    Variation('chunk-min-length',
              'Pushing a blob in chunks: "If the registry has a minimum chunk size, '
              'the `POST` response SHOULD include ... `OCI-Chunk-Min-Length`"; "the '
              'size of each chunk, except for the final chunk, SHOULD be greater or '
              'equal to that value"; "The server MAY enforce a minimum chunk size"',
              'read `OCI-Chunk-Min-Length` from the POST answer and send chunks at '
              'least that large (the last may be smaller); after 416, GET the session '
              'and resume'),
    Variation('warnings',
              'Warnings: "Registry implementations MAY include informational warnings '
              'in `Warning` headers" (warn-code 299, warn-agent `-`)',
              'show each warning to the user, in order, unobtrusively; never fail on '
              'one'),
)}


def check_names(names: Iterable[str]) -> None:
    unknown = [n for n in names if n not in VARIATIONS]
    if unknown:
        raise ValueError(f'variations: unknown {", ".join(unknown)} '
                         f'(known: {", ".join(VARIATIONS)})')


def adjust(config: Config) -> Config:
    """The registry switches some variations stand for."""
    if 'no-deletes' in config.variations:
        config = dataclasses.replace(config, delete_manifests=False, delete_tags=False,
                                     delete_blobs=False)
    return config


def tag_page_max(config: Config) -> int:
    """no-tag-pagination: one page holds every tag (no Link)."""
    return 2**31 if 'no-tag-pagination' in config.variations else config.page_max


def _headers(event: Any) -> list[tuple[bytes, bytes]]:
    return [(bytes(k), bytes(v)) for k, v in event.get('headers', [])]


def _get(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    return next((v for k, v in headers if k.lower() == name), None)


def _without(headers: Headers, *names: bytes) -> Headers:
    return [(k, v) for k, v in headers if k.lower() not in names]


def _strip_query(scope: MutableMapping[str, Any], *keys: str) -> MutableMapping[str, Any]:
    pairs = parse_qsl(scope.get('query_string', b'').decode('latin-1'),
                      keep_blank_values=True)
    kept = urlencode([(k, v) for k, v in pairs if k not in keys])
    return {**scope, 'query_string': kept.encode('latin-1')}


async def _answer(send: Send, status: int, headers: list[tuple[bytes, bytes]],
                  body: bytes = b'') -> None:
    headers = [*_without(headers, b'content-length'),
               (b'content-length', str(len(body)).encode()),
               (API_VERSION[0].lower().encode(), API_VERSION[1].encode())]
    await send({'type': 'http.response.start', 'status': status, 'headers': headers})
    await send({'type': 'http.response.body', 'body': body})


async def _error(send: Send, error: RegistryError, headers: Headers | None = None
                 ) -> None:
    await _answer(send, error.status,
                  [*(headers or []), (b'content-type', b'application/json')], error.body())


class Capture:
    """Runs the app on a request and keeps its answer (for answers built from it)."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b''

    async def __call__(self, event: Any) -> None:
        if event['type'] == 'http.response.start':
            self.status = event['status']
            self.headers = _headers(event)
        else:
            self.body += event.get('body', b'')


async def _no_body() -> Any:
    return {'type': 'http.request', 'body': b'', 'more_body': False}


class Variations:
    """ASGI wrapper showing the configured variations to clients."""

    def __init__(self, app: ASGIApp, config: Config, registry: Registry):
        self.app = app
        self.on = frozenset(config.variations)
        self.registry = registry
        self.min_chunk = config.chunk_min_length
        self.short_sessions: set[str] = set()
        host, _, port = config.redirect_listen.rpartition(':')
        self.redirect_host = host.strip('[]')
        self.redirect_port = int(port)
        self.redirect_scheme = 'https' if config.tls_cert else 'http'
        self._key: bytes | None = None
        if 'blob-redirect' in self.on:
            # A presigned URL is a credential: the access log never shows it whole.
            logging.getLogger('uvicorn.access').addFilter(redact_signature)

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive,
                       send: Send) -> None:
        if scope['type'] != 'http' or not self.on:
            await self.app(scope, receive, send)
            return
        if 'blob-redirect' in self.on and self._at_redirect_target(scope):
            await self._serve_redirected(scope, send)
            return
        if not scope['path'].startswith('/v2'):
            await self.app(scope, receive, send)
            return
        endpoint = scope_endpoint(scope)
        # Set here: the app may see a copy of the scope (a rewritten query string).
        scope[ENDPOINT_KEY] = endpoint
        send = self._decorating(scope, endpoint, send)
        if 'no-referrers' in self.on and endpoint == 'end-12':
            scope[VARIATION_KEY] = 'no-referrers'
            await _error(send, RegistryError(
                ErrorCode.UNSUPPORTED, 'the referrers API is not supported',
                detail={'variation': 'no-referrers'}, status=404))
            return
        if 'mount-202' in self.on and endpoint == 'end-11':
            scope[VARIATION_KEY] = 'mount-202'
            scope = _strip_query(scope, 'mount', 'from')
        if 'no-tag-pagination' in self.on and endpoint == 'end-8':
            scope = _strip_query(scope, 'n', 'last')
        if 'blob-redirect' in self.on and endpoint == 'end-2' and scope['method'] == 'GET':
            await self._redirect(scope, receive, send)
            return
        if 'chunk-min-length' in self.on and endpoint in ('end-5', 'end-6', 'end-14'):
            await self._chunk(scope, receive, send, endpoint)
            return
        await self.app(scope, receive, send)

    def _decorating(self, scope: MutableMapping[str, Any], endpoint: str,
                    send: Send) -> Send:
        on = self.on

        async def decorated(event: Any) -> None:
            if event['type'] != 'http.response.start':
                await send(event)
                return
            headers = _headers(event)
            if 'absolute-location' in on:
                loc = _get(headers, b'location')
                if loc is not None and loc.startswith(b'/'):
                    host = _get(scope['headers'], b'host') or b'%s:%d' % (
                        scope['server'][0].encode(), scope['server'][1])
                    headers = [*_without(headers, b'location'),
                               (b'location', b'%s://%s%s' % (
                                   scope.get('scheme', 'http').encode(), host, loc))]
            if 'no-referrers' in on and endpoint == 'end-7':
                headers = _without(headers, b'oci-subject')
            if 'no-tag-pagination' in on and endpoint == 'end-8':
                headers = _without(headers, b'link')
            if ('chunk-min-length' in on and endpoint == 'end-4a'
                    and event['status'] == 202):
                headers.append((b'oci-chunk-min-length', str(self.min_chunk).encode()))
            if 'warnings' in on:
                headers.append((b'warning', WARNING.encode()))
            await send({**event, 'headers': headers})
        return decorated

    # -- chunk-min-length ---------------------------------------------------------------

    async def _chunk(self, scope: MutableMapping[str, Any], receive: Receive, send: Send,
                     endpoint: str) -> None:
        session = scope['path']
        if endpoint != 'end-5':  # the session closes: forget it
            self.short_sessions.discard(session)
            await self.app(scope, receive, send)
            return
        if session in self.short_sessions:
            # A short chunk was followed by another: it was not the last one.
            scope[VARIATION_KEY] = 'chunk-min-length'
            state = Capture()
            await self.app({**scope, 'method': 'GET', 'query_string': b''}, _no_body,
                           state)
            kept = [(k, v) for k, v in state.headers
                    if k.lower() in (b'location', b'range', b'blob-upload-session-id')]
            await _error(send, RegistryError(
                ErrorCode.BLOB_UPLOAD_INVALID,
                'a chunk before this one was smaller than OCI-Chunk-Min-Length',
                detail={'min': self.min_chunk,
                        'spec': 'distribution-spec §Pushing a blob in chunks'},
                status=416), kept)
            return
        received = 0

        async def counted() -> Any:
            nonlocal received
            event = await receive()
            received += len(event.get('body', b''))
            return event

        status = 0

        async def watched(event: Any) -> None:
            nonlocal status
            if event['type'] == 'http.response.start':
                status = event['status']
            await send(event)

        await self.app(scope, counted, watched)
        if status == 202 and received < self.min_chunk:
            if len(self.short_sessions) > 10_000:
                self.short_sessions.clear()
            self.short_sessions.add(session)

    # -- blob-redirect ------------------------------------------------------------------

    def _at_redirect_target(self, scope: MutableMapping[str, Any]) -> bool:
        server = scope.get('server')
        if not server:
            return False
        return bool(server[1] == self.redirect_port and server[0] == self.redirect_host)

    async def _sign(self, name: str, digest: str, expires: int) -> str:
        if self._key is None:
            self._key = await redirect_key(self.registry.meta)
        mac = hmac.new(self._key, f'{name}\0{digest}\0{expires}'.encode(),
                       hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).decode().rstrip('=')

    async def _redirect(self, scope: MutableMapping[str, Any], receive: Receive,
                        send: Send) -> None:
        """end-2 GET → 307 to the target, once the registry (auth included) would
        have answered 200: asked as a HEAD, so no bytes are read twice."""
        state = Capture()
        await self.app({**scope, 'method': 'HEAD'}, receive, state)
        if state.status != 200:  # errors as they are, with their bodies
            await self.app(scope, _no_body, send)
            return
        scope[VARIATION_KEY] = 'blob-redirect'
        name, _, digest = scope['path'][len('/v2/'):].rpartition('/blobs/')
        expires = int(time.time()) + REDIRECT_TTL
        try:
            signature = await self._sign(name, digest, expires)
        except StoreUnavailable as ex:
            await _error(send, store_unavailable(ex.store, ex.reason))
            return
        query = urlencode({'name': name, 'expires': expires, 'signature': signature})
        host = (f'[{self.redirect_host}]' if ':' in self.redirect_host
                else self.redirect_host)
        location = (f'{self.redirect_scheme}://{host}:{self.redirect_port}'
                    f'{REDIRECT_PATH}{quote(digest)}?{query}')
        kept = [(k, v) for k, v in state.headers
                if k.lower() in (b'docker-content-digest',)]
        await _answer(send, 307, [*kept, (b'location', location.encode())])

    async def _serve_redirected(self, scope: MutableMapping[str, Any], send: Send) -> None:
        """The redirect target: a presigned-URL blob server on its own address."""
        path = scope['path']
        if not path.startswith(REDIRECT_PATH) or scope['method'] not in ('GET', 'HEAD'):
            await _error(send, RegistryError(ErrorCode.UNSUPPORTED, 'not found here',
                                             status=404))
            return
        if _get(scope['headers'], b'authorization') is not None:
            # S3 and similar stores refuse a presigned request that also carries an
            # Authorization header; the registry's credentials must stay with it.
            scope[LEAKED_AUTH_KEY] = True
            await _error(send, RegistryError(
                ErrorCode.DENIED, 'the redirect target takes no Authorization header: '
                'the client forwarded the registry credentials across hosts',
                detail={'variation': 'blob-redirect'}, status=400))
            return
        digest = path[len(REDIRECT_PATH):]
        query = dict(parse_qsl(scope.get('query_string', b'').decode('latin-1')))
        name = query.get('name', '')
        try:
            expires = int(query.get('expires', '0'))
        except ValueError:
            expires = 0
        try:
            good = hmac.compare_digest(await self._sign(name, digest, expires),
                                       query.get('signature', ''))
        except StoreUnavailable as ex:
            await _error(send, store_unavailable(ex.store, ex.reason))
            return
        if not good or expires < time.time():
            await _error(send, RegistryError(
                ErrorCode.DENIED, 'the signed URL is invalid or expired', status=403))
            return
        try:
            d, size = await self.registry.blob_size(name, digest)
            rng = parse_range((_get(scope['headers'], b'range') or b'').decode('latin-1'),
                              size)
        except RegistryError as ex:
            await _error(send, ex)
            return
        except RangeNotSatisfiable:
            await _answer(send, 416, [(b'content-range', f'bytes */{size}'.encode())])
            return
        start, length, status = 0, size, 200
        headers = [(b'content-type', b'application/octet-stream'),
                   (b'docker-content-digest', str(d).encode()),
                   (b'accept-ranges', b'bytes')]
        if rng is not None:
            start, length, status = rng[0], rng[1] - rng[0] + 1, 206
            headers.append((b'content-range', f'bytes {rng[0]}-{rng[1]}/{size}'.encode()))
        headers.append((b'content-length', str(length).encode()))
        if scope['method'] == 'HEAD':
            await send({'type': 'http.response.start', 'status': status,
                        'headers': headers})
            await send({'type': 'http.response.body', 'body': b''})
            return
        try:
            chunks = await self.registry.read_blob(d, start, length)
        except RegistryError as ex:
            await _error(send, ex)
            return
        await send({'type': 'http.response.start', 'status': status, 'headers': headers})
        async for chunk in chunks:
            await send({'type': 'http.response.body', 'body': chunk, 'more_body': True})
        await send({'type': 'http.response.body', 'body': b''})


_SIGNATURE = re.compile(r'(signature=)[^&\s"]+')


def redact_signature(record: logging.LogRecord) -> bool:
    if isinstance(record.args, tuple):
        record.args = tuple(_SIGNATURE.sub(r'\1REDACTED', a) if isinstance(a, str) else a
                            for a in record.args)
    return True


async def redirect_key(store: MetadataStore) -> bytes:
    """The presigned-URL key every worker and replica shares, kept in the metadata
    store (``signing_keys``, name ``blob-redirect``; made at first use, the first
    stored wins), so a URL one replica signed is served by any other."""
    key = await store.signing_key(REDIRECT_KEY, None)
    if key is None:
        key = await store.signing_key(REDIRECT_KEY, os.urandom(32))
    if key is None or len(key) < 32:
        raise StoreUnavailable(store.name, (
            f'the blob-redirect key in the {store.name} store is missing or short: '
            f"delete it (DELETE FROM signing_keys WHERE name = '{REDIRECT_KEY}')"))
    return key
