"""Fault injection (``--faults``): the failures real registries and the networks in
front of them produce, at chosen rates per spec endpoint, reproducible by seed.

A spec is comma-separated rules ``ENDPOINTS:KIND[(PARAM)]=RATE``::

    blob-get:truncate=0.1,manifest-get:429(2)=0.2,*:reset=0.05

``RATE`` is a share of requests (``0.1``), or ``xN``: the first N requests for
each method and path (``blob-get:503=x1``: every blob's first GET fails, its retry
does not), which tests a client's retries without luck. ``ENDPOINTS`` is an
endpoint id of the distribution spec as :func:`endpoint_id` names it (``end-2``,
``end-4a``, ``catalog``), an alias below (``blob-get``), a ``+``-joined list of
those, or ``*`` (every ``/v2/`` endpoint). The first rule whose endpoint matches
and whose draw falls under its rate decides.

Kinds (each answer carries ``OCI-Ref-Fault: <kind>`` where headers get out, and the
request scope gets ``oci_ref.fault``):

- ``429`` (PARAM: Retry-After seconds, default 1), ``503`` (idem), ``500``:
  answered before the request reaches the registry, so a refused write stores
  nothing (its body is not read).
- ``reset``: the TCP connection is reset (RST). A request without a body gets the
  status line, headers and half the body first; a request with a body (a write)
  runs to its end, so it is stored, and then loses its answer: the client cannot
  tell, and must retry idempotently (the spec's PUTs are).
- ``slow`` (PARAM: seconds, default 2): the first response byte waits.
- ``truncate``: a 200 answer to a GET carries only the first half of its body,
  with a Content-Length that matches what is sent: HTTP sees a complete answer,
  only the digest (or the descriptor's size) shows the loss.

Faults act outside the registry, on requests and answers only: stored state is
never touched. Decisions are keyed by (seed, method, path, how many times that
method and path were asked before): with one worker the same seed and the same
requests give the same faults whatever the interleaving, and a retry draws anew.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import secrets
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from oci_ref.errors import ErrorCode, ExtensionCode, RegistryError
from oci_ref.http import ABORT_KEY, API_VERSION, ASGIApp, Receive, Send
from oci_ref.routing import split_path

log = logging.getLogger('oci_ref')

# oci_ref.metrics.ENDPOINT_KEY (not imported: see scope_endpoint).
ENDPOINT_KEY = 'oci_ref.endpoint'
FAULT_HEADER = 'OCI-Ref-Fault'
FAULT_KEY = 'oci_ref.fault'

KINDS = ('429', '500', '503', 'reset', 'slow', 'truncate')
DEFAULT_PARAM = {'429': 1.0, '503': 1.0, 'slow': 2.0}

ALIASES: dict[str, tuple[str, ...]] = {
    'ping': ('end-1',),
    'blob-get': ('end-2',),
    'manifest-get': ('end-3',),
    'upload-start': ('end-4a', 'end-4b'),
    'upload-chunk': ('end-5',),
    'upload-finish': ('end-6',),
    'manifest-put': ('end-7',),
    'tags': ('end-8',),
    'manifest-delete': ('end-9',),
    'blob-delete': ('end-10',),
    'mount': ('end-11',),
    'referrers': ('end-12',),
    'upload-status': ('end-13',),
    'upload-cancel': ('end-14',),
    'catalog': ('catalog',),
}
ENDPOINT_IDS = frozenset(
    ['end-1', 'end-2', 'end-3', 'end-4a', 'end-4b', 'end-5', 'end-6', 'end-7', 'end-8',
     'end-9', 'end-10', 'end-11', 'end-12', 'end-13', 'end-14', 'catalog'])
ALIASES['reads'] = ('end-1', 'end-2', 'end-3', 'end-8', 'end-12', 'end-13', 'catalog')
ALIASES['writes'] = ('end-4a', 'end-4b', 'end-5', 'end-6', 'end-7', 'end-9', 'end-10',
                     'end-11', 'end-14')

_RULE = re.compile(r'(?P<where>[a-z0-9*+-]+):(?P<kind>[a-z0-9]+)'
                   r'(?:\((?P<param>[0-9]+(?:\.[0-9]+)?)\))?'
                   r'=(?:x(?P<first>[0-9]{1,6})|(?P<rate>[0-9.]+))')


class FaultSpecError(ValueError):
    pass


@dataclass(frozen=True)
class Rule:
    endpoints: frozenset[str]
    kind: str
    rate: float
    param: float | None = None
    first: int = 0  # xN: the first N requests per method and path, instead of a rate

    @property
    def value(self) -> float:
        return self.param if self.param is not None else DEFAULT_PARAM.get(self.kind, 0)


def parse(spec: str) -> tuple[Rule, ...]:
    """Rules of a ``--faults`` spec; FaultSpecError names the first bad part."""
    rules = []
    for part in (p.strip() for p in spec.split(',')):
        if not part:
            continue
        m = _RULE.fullmatch(part)
        if m is None:
            raise FaultSpecError(f'faults: {part!r} is not ENDPOINTS:KIND[(PARAM)]=RATE')
        if m['kind'] not in KINDS:
            raise FaultSpecError(f'faults: unknown kind {m["kind"]!r} in {part!r} '
                                 f'(kinds: {", ".join(KINDS)})')
        try:
            rate = 1.0 if m['first'] else float(m['rate'])
        except ValueError:
            rate = -1.0
        if not 0 <= rate <= 1:
            raise FaultSpecError(f'faults: rate in {part!r} must be between 0 and 1')
        if m['param'] is not None and m['kind'] not in DEFAULT_PARAM:
            raise FaultSpecError(f'faults: {m["kind"]} takes no parameter ({part!r})')
        endpoints: set[str] = set()
        for name in m['where'].split('+'):
            if name == '*':
                endpoints |= ENDPOINT_IDS
            elif name in ALIASES:
                endpoints |= set(ALIASES[name])
            elif name in ENDPOINT_IDS:
                endpoints.add(name)
            else:
                raise FaultSpecError(f'faults: unknown endpoint {name!r} in {part!r} '
                                     f'(an endpoint id, {", ".join(ALIASES)} or *)')
        rules.append(Rule(frozenset(endpoints), m['kind'], rate,
                          None if m['param'] is None else float(m['param']),
                          int(m['first'] or 0)))
    return tuple(rules)


def scope_endpoint(scope: MutableMapping[str, Any]) -> str:
    """The spec endpoint id of a request, from its path alone (before routing)."""
    # Imported here: Config imports this module, before `oci-ref serve` has set
    # PROMETHEUS_MULTIPROC_DIR, which prometheus_client reads on import.
    from oci_ref.metrics import endpoint_id

    path = scope['path']
    if path in ('/v2/', '/v2'):
        template = '/v2/'
    elif path == '/v2/_catalog':
        template = path
    else:
        parts = split_path(path)
        if parts is None:
            return 'other'
        suffix = parts[1]
        if suffix in ('blobs/uploads', 'blobs/uploads/'):
            template = '/v2/{name}/blobs/uploads/'
        else:
            head = suffix.split('/', 2)
            template = {
                'blobs': '/v2/{name}/blobs/uploads/{session_id}'
                if suffix.startswith('blobs/uploads/') else '/v2/{name}/blobs/{digest}',
                'manifests': '/v2/{name}/manifests/{reference}',
                'tags': '/v2/{name}/tags/list',
                'referrers': '/v2/{name}/referrers/{digest}',
            }.get(head[0], '')
    params = parse_qs(scope.get('query_string', b'').decode('latin-1'),
                      keep_blank_values=True)
    return endpoint_id(template, scope['method'], params)


class Plan:
    """Which fault (if any) each request gets."""

    def __init__(self, rules: tuple[Rule, ...], seed: int):
        self.rules = rules
        self.seed = seed
        self._asked: dict[tuple[str, str], int] = {}

    def decide(self, method: str, path: str, endpoint: str) -> Rule | None:
        key = (method, path)
        n = self._asked.get(key, 0)
        if len(self._asked) > 100_000:  # a bound, not a policy: long runs stay small
            self._asked.clear()
        self._asked[key] = n + 1
        for i, rule in enumerate(self.rules):
            if endpoint not in rule.endpoints:
                continue
            if rule.first:
                hit = n < rule.first
            else:
                hit = self.draw(method, path, n, i) < rule.rate
            if hit:
                return rule
        return None

    def draw(self, method: str, path: str, n: int, i: int) -> float:
        h = hashlib.sha256(f'{self.seed}\0{method}\0{path}\0{n}\0{i}'.encode()).digest()
        return int.from_bytes(h[:8], 'big') / 2**64


def new_seed() -> int:
    return secrets.randbelow(2**31)


class ConnectionReset(Exception):
    """Raised where the server cannot reset the connection itself (in-process)."""


class Faults:
    """ASGI wrapper injecting the plan's faults; pass-through when none is drawn."""

    def __init__(self, app: ASGIApp, plan: Plan):
        self.app = app
        self.plan = plan

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive,
                       send: Send) -> None:
        if scope['type'] != 'http' or not scope['path'].startswith('/v2'):
            await self.app(scope, receive, send)
            return
        endpoint = scope_endpoint(scope)
        # Known before routing: a refused request is still counted under its endpoint.
        scope[ENDPOINT_KEY] = endpoint
        rule = self.plan.decide(scope['method'], scope['path'], endpoint)
        if rule is None:
            await self.app(scope, receive, send)
            return
        scope[FAULT_KEY] = rule.kind
        log.warning('fault %s on %s %s (%s)', rule.kind, scope['method'], scope['path'],
                 endpoint)
        if rule.kind in ('429', '500', '503'):
            await _refuse(send, rule)
        elif rule.kind == 'slow':
            await self.app(scope, receive, _slow(send, rule.value))
        elif rule.kind == 'truncate':
            await self.app(scope, receive, _truncating(send, scope))
        else:
            await self._reset(scope, receive, send)

    async def _reset(self, scope: MutableMapping[str, Any], receive: Receive,
                     send: Send) -> None:
        has_body = scope['method'] in ('POST', 'PUT', 'PATCH')
        state: dict[str, Any] = {'cut': None, 'sent': 0, 'done': False}

        async def cutting(event: Any) -> None:
            if state['done']:
                return
            if event['type'] == 'http.response.start':
                length = _content_length(event['headers'])
                if has_body or scope['method'] == 'HEAD' or not length:
                    # A write ran (and committed), or there is no body to cut:
                    # the answer never comes.
                    state['done'] = True
                    return
                state['cut'] = length // 2
                headers = [*event['headers'], _fault_header('reset')]
                await send({**event, 'headers': headers})
                return
            body = event.get('body', b'')
            room = state['cut'] - state['sent']
            if len(body) < room and event.get('more_body', False):
                state['sent'] += len(body)
                await send(event)
                return
            if room > 0:
                await send({'type': 'http.response.body', 'body': body[:room],
                            'more_body': True})
            state['done'] = True

        await self.app(scope, receive, cutting)
        abort = scope.get(ABORT_KEY)
        if abort is None:
            raise ConnectionReset(f'fault: reset on {scope["method"]} {scope["path"]}')
        abort()


def _fault_header(kind: str) -> tuple[bytes, bytes]:
    return FAULT_HEADER.lower().encode(), kind.encode()


def _content_length(headers: Any) -> int | None:
    for k, v in headers:
        if k.lower() == b'content-length':
            with contextlib.suppress(ValueError):
                return int(v)
    return None


async def _refuse(send: Send, rule: Rule) -> None:
    status = int(rule.kind)
    # 5xx: the code the registry's own 5xx answers use (oci_ref/errors.py).
    code = ErrorCode.TOOMANYREQUESTS if status == 429 else ExtensionCode.UNAVAILABLE
    message = {429: 'too many requests', 500: 'internal server error',
               503: 'service unavailable'}[status]
    body = RegistryError(code, f'{message} (injected fault)',
                         detail={'fault': rule.kind}, status=status).body()
    headers = [(b'content-type', b'application/json'),
               (b'content-length', str(len(body)).encode()),
               (API_VERSION[0].lower().encode(), API_VERSION[1].encode()),
               _fault_header(rule.kind)]
    if status in (429, 503):
        headers.append((b'retry-after', str(round(rule.value)).encode()))
    await send({'type': 'http.response.start', 'status': status, 'headers': headers})
    await send({'type': 'http.response.body', 'body': body})


def _slow(send: Send, seconds: float) -> Send:
    async def delayed(event: Any) -> None:
        if event['type'] == 'http.response.start':
            await asyncio.sleep(seconds)
            event = {**event, 'headers': [*event['headers'], _fault_header('slow')]}
        await send(event)
    return delayed


def _truncating(send: Send, scope: MutableMapping[str, Any]) -> Send:
    state: dict[str, Any] = {'keep': None, 'sent': 0, 'done': False}

    async def truncated(event: Any) -> None:
        if state['done']:
            return
        if event['type'] == 'http.response.start':
            length = _content_length(event['headers'])
            if scope['method'] != 'GET' or event['status'] != 200 or not length \
                    or length < 2:
                scope.pop(FAULT_KEY, None)  # nothing to truncate: no fault
                state['done'] = None
                await send(event)
                return
            state['keep'] = keep = length // 2
            headers = [(k, v) for k, v in event['headers']
                       if k.lower() != b'content-length']
            headers += [(b'content-length', str(keep).encode()), _fault_header('truncate')]
            await send({**event, 'headers': headers})
            return
        if state['keep'] is None:  # passing through
            await send(event)
            return
        body = event.get('body', b'')[:state['keep'] - state['sent']]
        state['sent'] += len(body)
        more = event.get('more_body', False) and state['sent'] < state['keep']
        await send({'type': 'http.response.body', 'body': body, 'more_body': more})
        if not more:
            state['done'] = True
    return truncated
