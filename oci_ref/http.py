"""HTTP plumbing shared by the resources: middleware, header parsing, pagination."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlencode

import falcon
import falcon.asgi

from oci_ref.errors import ErrorCode, RegistryError, status_code_for, store_unavailable
from oci_ref.reference import validate_name
from oci_ref.registry import ContentRange
from oci_ref.storage import StoreUnavailable

log = logging.getLogger('oci_ref')

API_VERSION = ('Docker-Distribution-API-Version', 'registry/2.0')
INDEX_TYPE = 'application/vnd.oci.image.index.v1+json'


class DistributionMiddleware:
    """Headers every response carries, and the repository-name check, done once."""

    def __init__(self) -> None:
        from oci_ref.metrics import ENDPOINT_KEY, endpoint_id  # an import cycle

        # Kept here: an import statement in the responder runs on every request.
        self._endpoint_key, self._endpoint_id = ENDPOINT_KEY, endpoint_id

    async def process_resource(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, resource: Any,
        params: dict[str, Any],
    ) -> None:
        req.scope[self._endpoint_key] = self._endpoint_id(req.uri_template, req.method,
                                                          req.params)
        if 'name' in params:
            validate_name(params['name'])

    async def process_response(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, resource: Any,
        req_succeeded: bool,
    ) -> None:
        resp.set_header(*API_VERSION)


async def handle_registry_error(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: RegistryError,
    params: dict[str, Any],
) -> None:
    """Render the spec's envelope whatever the request's Accept header says."""
    resp.status = ex.status
    for k, v in ex.headers.items():
        resp.set_header(k, v)
    resp.content_type = 'application/json'
    resp.data = ex.body()


async def handle_store_unavailable(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: StoreUnavailable,
    params: dict[str, Any],
) -> None:
    """A store that cannot answer now: 503 naming it (retryable), never a 500."""
    log.warning('%s %s: %s', req.method, req.path, ex)
    await handle_registry_error(req, resp, store_unavailable(ex.store, ex.reason), params)


async def handle_unexpected(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: Exception,
    params: dict[str, Any],
) -> None:
    if isinstance(ex, falcon.HTTPError):
        # Falcon's own refusals (unknown route, method not allowed): keep their
        # status and headers (Allow on 405), but speak the spec's envelope.
        resp.status = ex.status
        for k, v in dict(ex.headers or {}).items():
            resp.set_header(k, v)
        code = status_code_for(ex.status_code)
        err = RegistryError(code, ex.title, detail=ex.description)
    else:
        log.exception('unhandled error on %s %s', req.method, req.path)
        # The spec's 14 codes have no "internal error"; UNSUPPORTED is the least
        # wrong, and the status says what happened.
        err = RegistryError(ErrorCode.UNSUPPORTED, 'internal server error', status=500)
        resp.status = 500
    resp.content_type = 'application/json'
    resp.data = err.body()


Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
# Falcon's App takes a dict scope; any ASGI callable fits here.
ASGIApp = Callable[..., Awaitable[None]]
_DISCONNECTED = 'oci_ref.client_disconnected'
# Set by oci_ref.protocol in the scope: resets the connection (SO_LINGER 0, then
# close); fault injection's `reset` calls it (oci_ref/faults.py).
ABORT_KEY = 'oci_ref.abort'


# Request headers larger than this are refused (431) before any handler runs.
MAX_HEADER_BYTES = 64 * 1024
# RFC 9110 §7.2 Host = uri-host [ ":" port ]; uri-host (RFC 3986 §3.2.2) is an IP
# literal in brackets, or a reg-name of unreserved, pct-encoded and sub-delims
# characters (IPv4 addresses included). Never a quote, backslash, space or slash.
_HOST = re.compile(
    rb"(?:\[[0-9A-Fa-f:.]+(?:%25[A-Za-z0-9._~-]+)?\]|[A-Za-z0-9._~!$&'()*+,;=%-]+)"
    rb'(?::[0-9]{0,5})?')


class RequestGuard:
    """ASGI wrapper guarding what comes in, before Falcon sees it.

    - Headers over MAX_HEADER_BYTES get 431: httptools (uvicorn's fast parser) sets
      no limit of its own, so an oversized header would reach the handlers.
    - An invalid or repeated Host gets 400 (RFC 9112 §3.2): URLs we send back (the
      Bearer challenge's realm) are built from it.
    - A client that goes away is marked in the scope: Falcon's request stream
      simply ends on ``http.disconnect``, which would make a body cut short look
      complete (RFC 9112 §8 forbids that); ``request_body`` checks the mark.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive,
                       send: Send) -> None:
        if scope['type'] != 'http':
            await self.app(scope, receive, send)
            return
        # ASGI allows any iterables here (even one-shot pairs): make them tuples in a
        # list before reading them, so the app can read them again.
        scope['headers'] = headers = [tuple(pair) for pair in scope['headers']]
        size = sum(len(k) + len(v) for k, v in headers)
        if size > MAX_HEADER_BYTES:
            await _refuse_headers(send, size)
            return
        hosts = [v for k, v in headers if k.lower() == b'host']
        if len(hosts) > 1 or (hosts and not _HOST.fullmatch(hosts[0])):
            await _refuse(send, RegistryError(
                ErrorCode.UNSUPPORTED, 'invalid Host header',
                detail={'rule': 'Host is one host[:port] (RFC 9112 §3.2)'}, status=400))
            return

        async def watched() -> Any:
            event = await receive()
            if event['type'] == 'http.disconnect':
                scope[_DISCONNECTED] = True
            return event

        await self.app(scope, watched, send)


async def _refuse_headers(send: Send, size: int) -> None:
    await _refuse(send, RegistryError(
        ErrorCode.UNSUPPORTED,
        'request headers too large',
        detail={'rule': f'request headers are at most {MAX_HEADER_BYTES} bytes',
                'received': size},
        status=431,
    ))


async def _refuse(send: Send, error: RegistryError) -> None:
    body = error.body()
    await send({'type': 'http.response.start', 'status': error.status, 'headers': [
        (b'content-type', b'application/json'),
        (b'content-length', str(len(body)).encode()),
        (API_VERSION[0].lower().encode(), API_VERSION[1].encode()),
        (b'connection', b'close'),
    ]})
    await send({'type': 'http.response.body', 'body': body})


async def request_body(req: falcon.asgi.Request) -> AsyncIterator[bytes]:
    """The request body as it arrives; raises if it ended because the client left."""
    async for chunk in req.stream:
        yield chunk
    if req.scope.get(_DISCONNECTED):
        raise RegistryError(
            ErrorCode.SIZE_INVALID,
            'the request body is incomplete: the client disconnected',
        )


def request_info(req: falcon.asgi.Request) -> dict[str, Any]:
    """Who asked, for webhook events (never credentials)."""
    return {'method': req.method, 'addr': req.remote_addr,
            'useragent': req.user_agent or ''}


def query_values(req: falcon.asgi.Request, key: str) -> list[str]:
    """All values of a repeated query parameter (``tag=a&tag=b``)."""
    value = req.params.get(key)
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def query_value(req: falcon.asgi.Request, key: str) -> str | None:
    values = query_values(req, key)
    return values[-1] if values else None


def media_type_param(req: falcon.asgi.Request, key: str) -> str | None:
    """A media type from the query: a raw '+' decoded as a space is mapped back
    (media types never hold spaces; `+json` suffixes are common)."""
    value = query_value(req, key)
    return None if value is None else value.replace(' ', '+')


# ASCII only: str.isdigit() also accepts '²' and full-width digits. Bounded: int()
# refuses strings over 4300 digits (a 500), and no count needs more than 100.
_DIGITS = re.compile(r'[0-9]{1,100}')


def page_size(req: falcon.asgi.Request, maximum: int) -> int:
    """§Listing Tags ``n``: a non-negative integer; capped at ``maximum`` (the
    response then carries a Link, so fewer than ``n`` is allowed)."""
    raw = query_value(req, 'n')
    if raw is None or raw == '':
        return maximum
    if not _DIGITS.fullmatch(raw):
        raise RegistryError(
            ErrorCode.UNSUPPORTED,
            'n must be a non-negative integer',
            detail={'n': raw[:50], 'spec': 'distribution-spec §Listing Tags'},
            status=400,
        )
    return min(int(raw), maximum)


def set_next_link(resp: falcon.asgi.Response, path: str, params: dict[str, Any]) -> None:
    """RFC 5988 ``Link: <…>; rel="next"`` with a same-origin relative URL."""
    query = urlencode({k: v for k, v in params.items() if v is not None}, doseq=True)
    resp.set_header('Link', f'<{path}?{query}>; rel="next"')


_CONTENT_RANGE = re.compile(r'(?:bytes[ =])?(\d+)-(\d+)(?:/(?:\d+|\*))?')
# Beyond any real size; int() of a longer digit string would also raise (4300 digits).
_HUGE = 10**18


def _number(digits: str) -> int:
    digits = digits.lstrip('0') or '0'  # RFC 9110 allows leading zeros
    return _HUGE if len(digits) > 18 else int(digits)


def parse_content_range(value: str | None) -> ContentRange | None:
    """Request ``Content-Range`` of a chunk, ``start-end`` inclusive (spec grammar
    ``^[0-9]+-[0-9]+$``; the RFC 9110 ``bytes `` form is accepted too). A malformed
    value is not raised here: the caller answers 416 with the session's state,
    which it only knows after looking the session up."""
    if value is None:
        return None
    m = _CONTENT_RANGE.fullmatch(value.strip())
    if m is None or _number(m[2]) < _number(m[1]):
        return ContentRange.invalid(
            f'malformed Content-Range {value[:100]!r}: expected start-end')
    return ContentRange(_number(m[1]), _number(m[2]))


_RANGE = re.compile(r'bytes=(\d*)-(\d*)')


class RangeNotSatisfiable(Exception):
    pass


def parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """A single-range ``Range: bytes=…`` request as (first, last) inclusive.

    None means "send the whole blob": no header, a syntax we don't parse, or several
    ranges (RFC 9110 lets a server ignore Range; answering a multi-range request
    with a single-range 206 would break clients that asked for several).
    """
    if not value:
        return None
    m = _RANGE.fullmatch(value.strip().replace(' ', ''))
    if m is None:
        return None
    first, last = m[1], m[2]
    if first == '' and last == '':
        return None
    if first == '':
        suffix = _number(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable
        return max(size - suffix, 0), size - 1
    start = _number(first)
    end = size - 1 if last == '' else min(_number(last), size - 1)
    if start >= size or (last != '' and _number(last) < start):
        raise RangeNotSatisfiable
    return start, end


def content_length(req: falcon.asgi.Request) -> int | None:
    raw = req.get_header('Content-Length')
    if raw is None or not _DIGITS.fullmatch(raw.strip()):
        return None
    return int(raw)
