"""The ASGI wrapper that watches every exchange and records what breaks the rules.

It sits outside the Falcon app (like :class:`oci_ref.metrics.Observe`) and sees the
request as it arrives and the head of the answer. When the answer starts, and before
it is passed on, it notes what the registry hands out (upload Locations, pagination
Links, Retry-After deadlines) and checks the request against the rules, in one
call to the store on the linter's own thread: the event loop never waits on SQLite,
and a finding is on disk before the client has its answer, so a report fetched
after a request always includes it, whichever worker answered.

The only change to answers: upload Locations carry one more query parameter
(``_lint=<token>``), which the spec allows (§POST then PUT: "The
<blob-push-location> MAY contain critical query parameters"); it is how a URL built
by hand is told from the one the registry returned.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from oci_ref.http import ASGIApp, Receive, Send
from oci_ref.lint.rules import (
    RULES,
    UPLOAD_PARAM,
    Exchange,
    client_key,
    evaluate,
    normal_query,
    upload_session,
)
from oci_ref.lint.store import LintStore
from oci_ref.metrics import ENDPOINT_KEY

log = logging.getLogger('oci_ref.lint')

# Paths a client of the distribution API sends (and the token endpoint, where
# credentials in the query matter); the operations and web view endpoints are not
# linted.
_LINTED = ('/v2', '/token')
_REDACTED = '<redacted>'
_SECRET_PARAM = re.compile(r'.*(?:token|password|passwd|secret|key|signature|'
                           r'credential|auth).*', re.I)
_MAX_HEADERS = 40
_MAX_VALUE = 300


def now() -> float:
    """The clock (tests replace it to step past a Retry-After)."""
    return time.time()


def redact_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode([(k, _REDACTED if _SECRET_PARAM.fullmatch(k) else v)
                      for k, v in pairs])


def redact_headers(headers: list[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers[:_MAX_HEADERS]:
        if name in ('authorization', 'proxy-authorization'):
            value = f'{value.split(" ", 1)[0]} {_REDACTED}'
        elif name == 'cookie':
            value = _REDACTED
        out[name] = (out[name] + ', ' + value) if name in out else value
        out[name] = out[name][:_MAX_VALUE]
    return out


def retry_seconds(value: str, at: float) -> float | None:
    """RFC 9110 §10.2.3: delay-seconds or an HTTP-date."""
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return parsedate_to_datetime(value).timestamp() - at
    except (TypeError, ValueError):
        return None


@dataclass
class _Handouts:
    locations: list[tuple[str, str]] = field(default_factory=list)  # (session, token)
    links: list[tuple[str, str]] = field(default_factory=list)  # (path, query)
    retry_after: float | None = None


class LintRecorder:
    """ASGI wrapper: lint every request to the API (see the module docstring)."""

    def __init__(self, app: ASGIApp, store: LintStore, *, is_proxy: bool = False,
                 auth_on: bool = False, manifest_max_bytes: int = 4 * 1024 * 1024):
        self.app = app
        self.store = store
        self.is_proxy = is_proxy
        self.auth_on = auth_on
        self.manifest_max_bytes = manifest_max_bytes
        self._thread = ThreadPoolExecutor(1, thread_name_prefix='oci-ref-lint')

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive,
                       send: Send) -> None:
        if scope['type'] != 'http' or not scope['path'].startswith(_LINTED):
            await self.app(scope, receive, send)
            return
        # ASGI allows one-shot iterables here; read them once, keep them readable.
        scope['headers'] = [tuple(pair) for pair in scope['headers']]
        for key in ('server', 'client'):
            if scope.get(key) is not None:
                scope[key] = tuple(scope[key])
        body_bytes = 0
        capture = scope['method'] == 'PUT' and '/manifests/' in scope['path']
        body: bytearray | None = bytearray() if capture else None

        async def watched_receive() -> Any:
            nonlocal body_bytes, body
            event = await receive()
            chunk = event.get('body', b'')
            body_bytes += len(chunk)
            if body is not None:
                if len(body) + len(chunk) > self.manifest_max_bytes:
                    body = None  # too large to be a manifest: the registry says so
                else:
                    body += chunk
            return event

        async def watched_send(event: Any) -> None:
            if event['type'] == 'http.response.start':
                try:
                    event = await self._lint(scope, event, body_bytes,
                                             bytes(body) if body is not None else None)
                except Exception:  # the linter never breaks an answer
                    log.exception('lint failed on %s %s', scope['method'], scope['path'])
            await send(event)

        await self.app(scope, watched_receive, watched_send)

    async def _lint(self, scope: MutableMapping[str, Any], start: dict[str, Any],
                    body_bytes: int, manifest: bytes | None) -> dict[str, Any]:
        at = now()
        headers = [(k.decode('latin-1').lower(), v.decode('latin-1'))
                   for k, v in scope['headers']]
        start_headers = [tuple(pair) for pair in start.get('headers', [])]
        response = {k.decode('latin-1').lower(): v.decode('latin-1')
                    for k, v in start_headers}
        server = scope.get('server')
        client = scope.get('client')
        ex = Exchange(
            method=scope['method'], path=scope['path'],
            query=scope.get('query_string', b'').decode('latin-1'),
            headers=headers, status=start['status'], response_headers=response,
            endpoint=scope.get(ENDPOINT_KEY, 'other'), scheme=scope.get('scheme', 'http'),
            server_host=server[0] if server else None,
            client_addr=client[0] if client else '', body_bytes=body_bytes,
            manifest_body=manifest, now=at, is_proxy=self.is_proxy,
            auth_on=self.auth_on)
        handouts = _Handouts()
        out_headers = []
        for k, v in start_headers:
            name = k.decode('latin-1').lower()
            if name == 'location':
                v = self._mark_location(v.decode('latin-1'), handouts).encode('latin-1')
            elif name == 'link':
                self._note_link(v.decode('latin-1'), handouts)
            out_headers.append((k, v))
        retry = response.get('retry-after')
        if retry is not None and start['status'] in (429, 503):
            seconds = retry_seconds(retry, at)
            if seconds is not None and seconds > 0:
                handouts.retry_after = at + seconds
        await asyncio.get_running_loop().run_in_executor(
            self._thread, self._commit, ex, handouts)
        return {**start, 'headers': out_headers}

    @staticmethod
    def _mark_location(location: str, handouts: _Handouts) -> str:
        parts = urlsplit(location)
        session = upload_session(parts.path)
        if session is None:
            return location
        token = secrets.token_hex(8)
        handouts.locations.append((session, token))
        sep = '&' if parts.query else '?'
        return f'{location}{sep}{UPLOAD_PARAM}={token}'

    @staticmethod
    def _note_link(link: str, handouts: _Handouts) -> None:
        m = re.match(r'\s*<([^>]*)>', link)
        if m:
            target = urlsplit(m[1])
            handouts.links.append((target.path, normal_query(target.query)))

    def _commit(self, ex: Exchange, handouts: _Handouts) -> None:
        """On the linter's thread: first check (against what was handed out before),
        then note what this answer hands out."""
        self.store.note_request(ex.user_agent[:300], ex.client_addr, ex.now)
        for rule, detail in evaluate(ex, self.store):
            if rule in RULES:
                self.store.record(ex.user_agent[:300], ex.client_addr, rule,
                                  self.example(ex, detail), ex.now)
        for session, token in handouts.locations:
            self.store.note_location(session, token, ex.now)
        for path, query in handouts.links:
            self.store.note_link(path, query, ex.now)
        if handouts.retry_after is not None:
            self.store.note_retry_after(client_key(ex.user_agent, ex.client_addr),
                                        ex.retry_key, handouts.retry_after)

    @staticmethod
    def example(ex: Exchange, detail: str) -> dict[str, Any]:
        """One request as the report shows it: credentials and tokens redacted."""
        query = redact_query(ex.query)
        return {'method': ex.method, 'path': ex.path[:500] + (f'?{query[:500]}' if query
                                                             else ''),
                'headers': redact_headers(ex.headers), 'status': ex.status,
                'endpoint': ex.endpoint, 'detail': detail, 'time': ex.now}
