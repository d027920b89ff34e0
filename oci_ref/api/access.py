"""Access control at the HTTP edge: challenges, the token endpoint, login limits.

Modes (``auth``): ``none``; ``basic`` (htpasswd, ``WWW-Authenticate: Basic``);
``token`` (Docker token auth: 401 with ``WWW-Authenticate: Bearer realm=…,
service=…,scope=…``, tokens from ``/token``). Unauthenticated or bad credentials ->
401 UNAUTHORIZED with a challenge; authenticated but not allowed -> 403 DENIED
(basic) or 401 with ``error="insufficient_scope"`` (token: clients fetch a wider
token once and retry).
"""

from __future__ import annotations

import collections
import time
from typing import Any
from urllib.parse import parse_qsl

import falcon
import falcon.asgi

from oci_ref.auth import (
    ACTIONS,
    ANONYMOUS,
    Access,
    AuthError,
    Htpasswd,
    Principal,
    TokenIssuer,
    basic_credentials,
    bearer_token,
    parse_scope,
)
from oci_ref.errors import ErrorCode, RegistryError
from oci_ref.http import query_value, query_values
from oci_ref.reference import is_valid_name

REALM = 'oci-ref'
_OPEN = {'/healthz', '/readyz', '/metrics', '/openapi.yaml', '/token'}


def requirement(template: str | None, method: str) -> tuple[str, frozenset[str]] | None:
    """What a route needs: ('base'|'catalog'|'repository', actions), or None (open)."""
    if template is None or template in _OPEN:
        return None
    if template in ('/v2/', '/v2'):
        return 'base', frozenset()
    if template == '/v2/_catalog':
        return 'catalog', frozenset()
    if '/blobs/uploads/' in template or method in ('PUT', 'PATCH', 'POST'):
        # Writing needs pull too: clients check what exists before they push.
        return 'repository', frozenset({'pull', 'push'})
    if method == 'DELETE':
        return 'repository', frozenset({'delete'})
    return 'repository', frozenset({'pull'})


class FailedLogins:
    """At most ``limit`` failed logins per client address per minute (per worker)."""

    def __init__(self, limit: int, window: float = 60.0):
        self.limit = limit
        self.window = window
        self._failures: dict[str, collections.deque[float]] = {}

    def check(self, addr: str) -> None:
        recent = self._recent(addr)
        if len(recent) >= self.limit:
            retry = int(self.window - (time.monotonic() - recent[0])) + 1
            raise RegistryError(
                ErrorCode.TOOMANYREQUESTS, 'too many failed logins; try again later',
                headers={'Retry-After': str(max(retry, 1))})

    def failed(self, addr: str) -> None:
        self._recent(addr).append(time.monotonic())
        if len(self._failures) > 10000:  # bound memory under address spraying
            self._failures.pop(next(iter(self._failures)))

    def _recent(self, addr: str) -> collections.deque[float]:
        recent = self._failures.setdefault(addr, collections.deque())
        while recent and time.monotonic() - recent[0] > self.window:
            recent.popleft()
        return recent


class AccessControl:
    """Falcon middleware: authenticate, authorise, or challenge."""

    def __init__(self, mode: str, access: Access, htpasswd: Htpasswd | None,
                 issuer: TokenIssuer | None, logins: FailedLogins):
        self.mode = mode
        self.access = access
        self.htpasswd = htpasswd
        self.issuer = issuer
        self.logins = logins

    async def process_resource(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                               resource: Any, params: dict[str, Any]) -> None:
        if self.mode == 'none':
            return
        need = requirement(req.uri_template, req.method)
        if need is None:
            return
        kind, actions = need
        name = params.get('name', '')
        scope = {'base': None, 'catalog': 'registry:catalog:*'}.get(
            kind, _scope(name, actions))
        source = _mount_source(req)
        if source is not None:
            # end-11: a mount reads its source, so the challenge names both scopes
            # (as CNCF distribution does) and one token can carry them.
            scope = f'{scope} {_scope(source, frozenset({"pull"}))}'
        principal = self.authenticate(req, scope)
        if kind == 'catalog':
            # The listing shows what the rules let this user pull (a catalog token
            # names no repositories).
            who = principal.identity()
            req.context.can_pull = lambda repo: 'pull' in self.access.allowed(who, repo)
        else:
            # A mount reads its source: the caller (or token) must be able to pull it.
            req.context.can_pull = lambda repo: 'pull' in self.access.allowed(
                principal, repo)
        if kind == 'base':
            if principal.anonymous:
                raise self.challenge(req, None)
        elif kind == 'catalog':
            if not self.access.may_list_catalog(principal):
                raise self.refuse(req, principal, 'registry:catalog:*')
        elif not actions <= self.access.allowed(principal, name):
            raise self.refuse(req, principal, scope or '')
        elif (source is not None and principal.scopes is not None
              and 'pull' not in principal.scopes.get(source, frozenset())
              and 'pull' in self.access.allowed(principal.identity(), source)):
            # The token lacks pull on the source but its holder may have it: ask
            # for a wider token. A holder who may not pull it gets a 202 upload.
            raise self.challenge(req, scope, 'insufficient scope',
                                 error='insufficient_scope')

    def authenticate(self, req: falcon.asgi.Request, scope: str | None) -> Principal:
        header = req.get_header('Authorization')
        if not header:
            return Principal(ANONYMOUS)
        addr = req.remote_addr or '?'
        if self.mode == 'basic':
            creds = basic_credentials(header)
            self.logins.check(addr)
            if creds and self.htpasswd and self.htpasswd.verify(*creds):
                return Principal(creds[0], self.access.groups_of(creds[0]))
            self.logins.failed(addr)
            raise self.challenge(req, scope, 'invalid credentials')
        token = bearer_token(header)
        if token is None or self.issuer is None:
            raise self.challenge(req, scope, 'a bearer token is required')
        try:
            claims = self.issuer.check(token)
        except AuthError as ex:
            raise self.challenge(req, scope, str(ex)) from None
        scopes: dict[str, frozenset[str]] = {}
        catalog = False
        for grant in claims.get('access', []):
            if grant.get('type') == 'repository':
                scopes[grant['name']] = scopes.get(grant['name'], frozenset()) | frozenset(
                    grant.get('actions', []))
            elif grant.get('type') == 'registry' and grant.get('name') == 'catalog':
                catalog = bool(grant.get('actions'))
        user = claims['sub']
        return Principal(user, self.access.groups_of(user), scopes=scopes, catalog=catalog)

    def challenge(self, req: falcon.asgi.Request, scope: str | None,
                  why: str = 'authentication required', error: str | None = None
                  ) -> RegistryError:
        """401 with the challenge a client needs (spec: JSON body on every 401)."""
        if self.mode == 'basic':
            value = f'Basic realm="{REALM}", charset="UTF-8"'
        else:
            service = self.issuer.service if self.issuer else REALM
            # An absolute realm: c/image and ggcr cannot use a relative one.
            value = f'Bearer realm="{req.prefix}/token",service="{service}"'
            if scope:
                value += f',scope="{scope}"'
            if error:
                value += f',error="{error}"'
        return RegistryError(ErrorCode.UNAUTHORIZED, why,
                             headers={'WWW-Authenticate': value})

    def refuse(self, req: falcon.asgi.Request, principal: Principal, scope: str
               ) -> RegistryError:
        if principal.anonymous:
            return self.challenge(req, scope)
        if self.mode == 'token':
            return self.challenge(req, scope, 'insufficient scope',
                                  error='insufficient_scope')
        return RegistryError(ErrorCode.DENIED,
                             detail={'scope': scope, 'user': principal.name})


class Token:
    """The Docker token endpoint (distribution docs/spec/auth/token.md, oauth.md)."""

    def __init__(self, control: AccessControl):
        self.control = control

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """GET /token?service=&scope=…[&offline_token=true] with optional Basic auth."""
        creds = basic_credentials(req.get_header('Authorization'))
        principal = self._login(req, creds)
        offline = (req.get_param('offline_token') or '').lower() == 'true'
        # Several scopes come as repeated parameters or space-separated in one.
        scopes = [s for value in query_values(req, 'scope') for s in value.split()]
        self._answer(resp, principal, scopes, refresh=offline and creds is not None)

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """POST /token (OAuth2 form): grant_type=password or refresh_token."""
        form = dict(parse_qsl((await req.stream.read()).decode('utf-8', 'replace')))
        grant = form.get('grant_type')
        if grant == 'password':
            creds = (form.get('username', ''), form.get('password', ''))
            principal = self._login(req, creds)
            refresh = form.get('access_type') == 'offline'
        elif grant == 'refresh_token':
            issuer = self._issuer()
            try:
                claims = issuer.check(form.get('refresh_token', ''), refresh=True)
            except AuthError as ex:
                raise RegistryError(ErrorCode.UNAUTHORIZED, str(ex)) from None
            user = claims['sub']
            principal = Principal(user, self.control.access.groups_of(user))
            refresh = False
        else:
            raise RegistryError(ErrorCode.UNSUPPORTED, 'unsupported grant_type',
                                detail={'grant_type': (grant or '')[:50]}, status=400)
        self._answer(resp, principal, form.get('scope', '').split(), refresh=refresh)

    def _issuer(self) -> TokenIssuer:
        if self.control.issuer is None:
            raise RegistryError(ErrorCode.UNSUPPORTED, 'token auth is not enabled',
                                status=404)
        return self.control.issuer

    def _login(self, req: falcon.asgi.Request, creds: tuple[str, str] | None
               ) -> Principal:
        self._issuer()
        if creds is None:
            return Principal(ANONYMOUS)
        addr = req.remote_addr or '?'
        self.control.logins.check(addr)
        htpasswd = self.control.htpasswd
        if htpasswd is None or not htpasswd.verify(*creds):
            self.control.logins.failed(addr)
            raise RegistryError(ErrorCode.UNAUTHORIZED, 'invalid credentials',
                                headers={'WWW-Authenticate': f'Basic realm="{REALM}"'})
        return Principal(creds[0], self.control.access.groups_of(creds[0]))

    def _answer(self, resp: falcon.asgi.Response, principal: Principal,
                scopes: list[str], *, refresh: bool) -> None:
        issuer = self._issuer()
        access = self.control.access
        granted: list[dict[str, Any]] = []
        for scope in scopes:
            parsed = parse_scope(scope)
            if parsed is None:
                continue
            kind, name, actions = parsed
            if kind == 'repository':
                # Grant the intersection; an empty grant is not an error (the
                # registry answers the request itself, with 401 or 403).
                ok = sorted(actions & access.allowed(principal, name) & set(ACTIONS))
                granted.append({'type': 'repository', 'name': name, 'actions': ok})
            elif kind == 'registry' and name == 'catalog':
                ok = ['*'] if access.may_list_catalog(principal) else []
                granted.append({'type': 'registry', 'name': 'catalog', 'actions': ok})
        token, ttl, issued_at = issuer.issue(principal.name, granted)
        body: dict[str, Any] = {'token': token, 'access_token': token,
                                'expires_in': ttl, 'issued_at': issued_at}
        if refresh and not principal.anonymous:
            body['refresh_token'] = issuer.issue(principal.name, [], refresh=True)[0]
        resp.media = body
        resp.set_header('Cache-Control', 'no-store')


def _mount_source(req: falcon.asgi.Request) -> str | None:
    """The ``from`` repository of a mount request (end-11), if valid."""
    if req.method != 'POST' or not (req.uri_template or '').endswith('/blobs/uploads/'):
        return None
    source = query_value(req, 'from')
    if query_value(req, 'mount') is None or source is None or not is_valid_name(source):
        return None
    return source


def _scope(name: str, actions: frozenset[str]) -> str:
    return f'repository:{name}:{",".join(a for a in ACTIONS if a in actions)}'

