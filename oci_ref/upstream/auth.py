"""Logging in to an upstream: Basic, or the Docker token flow, tokens kept per scope.

The token flow: the upstream answers 401 with ``WWW-Authenticate: Bearer
realm=…,service=…,scope=…``; we ask the realm for a token (GET with Basic
credentials or none; POST ``grant_type=refresh_token`` with an identity token) and
retry with ``Authorization: Bearer``. Tokens are kept per (realm, service, scope)
until shortly before they expire; concurrent requests for one scope share one
token request.

Credentials and tokens go only to the upstream's own host and to a realm on that
host, or on a host in the upstream's ``realm_hosts`` (Docker Hub: auth.docker.io);
a realm anywhere else is refused before any request is sent to it, and a realm
over plain HTTP is refused for an HTTPS upstream.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from oci_ref.upstream.config import Upstream
from oci_ref.upstream.credentials import Credentials, CredentialStore
from oci_ref.upstream.errors import (
    UpstreamAuthRefused,
    UpstreamBadResponse,
    UpstreamRealmRefused,
)

_PARAM = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
# The token spec's default when a response carries no expires_in.
DEFAULT_TOKEN_TTL = 60
TOKEN_BODY_MAX = 1 << 20


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="…",service="…"`` -> ('bearer', {realm: …, service: …})."""
    scheme, _, rest = header.strip().partition(' ')
    params = {}
    for m in _PARAM.finditer(rest):
        value = m[2] if m[2] is not None else m[3]
        params[m[1].lower()] = re.sub(r'\\(.)', r'\1', value)
    return scheme.lower(), params


def realm_allowed(upstream: Upstream, realm: str) -> str | None:
    """None when ``realm`` may receive credentials for ``upstream``, else why not."""
    parts = urlsplit(realm)
    if parts.scheme not in ('http', 'https') or not parts.hostname:
        return 'the token realm is not an http(s) URL'
    if urlsplit(upstream.url).scheme == 'https' and parts.scheme != 'https':
        return 'the token realm is plain http for an https upstream'
    if parts.netloc.lower() == upstream.host.lower():
        return None
    allowed = upstream.realm_hosts
    if parts.hostname.lower() in allowed or parts.netloc.lower() in allowed:
        return None
    return (f'the token realm is on host {parts.netloc}, which is neither the upstream '
            f'({upstream.host}) nor in its realm_hosts')


def basic_header(creds: Credentials) -> str:
    raw = f'{creds.username}:{creds.password}'.encode()
    return 'Basic ' + base64.b64encode(raw).decode()


class Token:
    __slots__ = ('expires', 'value')

    def __init__(self, value: str, expires: float):
        self.value = value
        self.expires = expires

    def __repr__(self) -> str:
        return 'Token(<hidden>)'


class UpstreamAuth:
    """Authorization headers for requests to one upstream."""

    def __init__(self, upstream: Upstream, credentials: CredentialStore,
                 http: httpx.AsyncClient):
        self.upstream = upstream
        self.credentials = credentials
        self.http = http
        self.scheme: str | None = None  # learnt from the first challenge
        self.realm: str | None = None
        self.service: str | None = None
        self.tokens: dict[tuple[str, str, str], Token] = {}
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}
        self.token_requests = 0  # for metrics and tests

    def __repr__(self) -> str:
        return f'UpstreamAuth({self.upstream.name}, scheme={self.scheme})'

    async def headers(self, repository: str) -> dict[str, str]:
        """Authorization to send up front, from what earlier challenges taught."""
        creds = self.credentials.for_repository(repository)
        if self.scheme == 'basic' and creds is not None and creds.basic:
            return {'Authorization': basic_header(creds)}
        if self.scheme == 'bearer' and self.realm is not None:
            token = await self._token(repository, scope(repository), creds)
            return {'Authorization': f'Bearer {token.value}'}
        return {}

    def forget(self, repository: str) -> None:
        """Drop the token for ``repository`` (the upstream refused it)."""
        if self.realm is not None:
            self.tokens.pop((self.realm, self.service or '', scope(repository)), None)

    async def answer(self, response: httpx.Response, repository: str
                     ) -> dict[str, str]:
        """Headers that answer the 401 ``response``; raise when we cannot."""
        kind, params = parse_challenge(response.headers.get('www-authenticate', ''))
        creds = self.credentials.for_repository(repository)
        name = self.upstream.name
        if kind == 'basic':
            if creds is None or not creds.basic:
                raise UpstreamAuthRefused(name, 'asks for a login and no credentials '
                                          'are configured for it',
                                          repository=repository)
            self.scheme = 'basic'
            return {'Authorization': basic_header(creds)}
        if kind != 'bearer' or 'realm' not in params:
            raise UpstreamBadResponse(name, 'answered 401 without a usable '
                                      'WWW-Authenticate challenge', repository=repository)
        why = realm_allowed(self.upstream, params['realm'])
        if why is not None:
            raise UpstreamRealmRefused(name, why, repository=repository)
        self.scheme, self.realm = 'bearer', params['realm']
        self.service = params.get('service', '')
        token = await self._token(repository, params.get('scope') or scope(repository),
                                  creds, key_scope=scope(repository))
        return {'Authorization': f'Bearer {token.value}'}

    async def _token(self, repository: str, wanted: str, creds: Credentials | None,
                     key_scope: str | None = None) -> Token:
        assert self.realm is not None
        key = (self.realm, self.service or '', key_scope or wanted)
        token = self.tokens.get(key)
        if token is not None and token.expires > time.monotonic():
            return token
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            token = self.tokens.get(key)
            if token is not None and token.expires > time.monotonic():
                return token
            token = await self._fetch(self.realm, self.service or '', wanted, creds,
                                      repository)
            self.tokens[key] = token
            return token

    async def _fetch(self, realm: str, service: str, wanted: str,
                     creds: Credentials | None, repository: str) -> Token:
        from oci_ref.upstream.client import send  # here: an import cycle

        name = self.upstream.name
        query: dict[str, Any] = {'scope': wanted}
        if service:
            query['service'] = service
        self.token_requests += 1
        if creds is not None and creds.identity_token:
            form = {'grant_type': 'refresh_token', 'refresh_token': creds.identity_token,
                    'client_id': 'oci-ref', **query}
            request = self.http.build_request('POST', realm, data=form)
        else:
            headers = {}
            if creds is not None and creds.basic:
                headers['Authorization'] = basic_header(creds)
            request = self.http.build_request('GET', realm, params=query, headers=headers)
        response = await send(self.http, request, name, 'other', stream=False)
        if response.status_code in (400, 401, 403):
            who = 'the configured credentials' if creds else 'anonymous access'
            raise UpstreamAuthRefused(
                name, f'its token service refused {who} (status {response.status_code})',
                repository=repository)
        if response.status_code != 200:
            raise UpstreamBadResponse(name, f'its token service answered '
                                      f'{response.status_code}', repository=repository)
        try:
            body = json.loads(response.content[:TOKEN_BODY_MAX])
            value = body.get('token') or body.get('access_token')
            ttl = int(body.get('expires_in') or DEFAULT_TOKEN_TTL)
        except (ValueError, TypeError, AttributeError):
            value, ttl = None, 0
        if not isinstance(value, str) or not value:
            raise UpstreamBadResponse(name, 'its token service sent no token',
                                      repository=repository)
        # Renew a little early, so that no request goes out with a dying token.
        margin = min(30.0, ttl / 4)
        return Token(value, time.monotonic() + max(ttl - margin, 1.0))


def scope(repository: str) -> str:
    return f'repository:{repository}:pull'
