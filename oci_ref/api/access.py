"""Access control at the HTTP edge: challenges, the token endpoint, login limits.

Modes (``auth``): ``none``; ``basic`` (htpasswd, ``WWW-Authenticate: Basic``);
``token`` (Docker token auth: 401 with ``WWW-Authenticate: Bearer realm=…,
service=…,scope=…``, tokens from ``/token``). Unauthenticated or bad credentials ->
401 UNAUTHORIZED with a challenge; authenticated but not allowed -> 403 DENIED
(basic) or 401 with ``error="insufficient_scope"`` (token: clients fetch a wider
token once and retry).

Password checks (bcrypt, 2-400 ms each) and re-reads of the htpasswd and access
files run in a small thread pool of their own, never on the event loop, and never
crowding out the storage threads. ``/metrics`` needs a login when auth is on
(``metrics_open`` opens it), ``/healthz`` and ``/readyz`` do not (``health_open``).
``/token`` reads at most TOKEN_FORM_MAX bytes, and nothing without token auth.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qsl

import falcon
import falcon.asgi

from oci_ref.auth import (
    ACTIONS,
    ANONYMOUS,
    Access,
    AccessFile,
    AuthError,
    Htpasswd,
    Principal,
    TokenIssuer,
    basic_credentials,
    bearer_token,
    parse_scope,
)
from oci_ref.errors import ErrorCode, RegistryError
from oci_ref.http import content_length, query_value, query_values, request_body
from oci_ref.reference import is_valid_name
from oci_ref.storage.interfaces import MetadataStore

REALM = 'oci-ref'
_OPEN = {'/openapi.yaml', '/token'}
HEALTH = {'/healthz', '/readyz'}
METRICS = '/metrics'
# A token request is a short form (a grant, a user, a few scopes).
TOKEN_FORM_MAX = 64 * 1024
# Concurrent bcrypt checks per worker: a burst of logins queues here instead of
# taking every thread the storage calls need.
PASSWORD_THREADS = 4
_password_pool: ThreadPoolExecutor | None = None


async def in_password_thread(fn: Any, *args: Any) -> Any:
    """Run a blocking credentials call (bcrypt, an htpasswd re-read) off the loop."""
    global _password_pool
    if _password_pool is None:
        _password_pool = ThreadPoolExecutor(PASSWORD_THREADS,
                                            thread_name_prefix='oci-ref-password')
    return await asyncio.get_running_loop().run_in_executor(_password_pool, fn, *args)


def requirement(template: str | None, method: str, *, health_open: bool = True,
                metrics_open: bool = False) -> tuple[str, frozenset[str]] | None:
    """What a route needs: ('base'|'login'|'catalog'|'repository', actions), or None
    (open). 'login': any valid user (the operations endpoints, when not open)."""
    if template in HEALTH:
        return None if health_open else ('login', frozenset())
    if template in (METRICS, '/lint/report', '/lint/report.html'):
        return None if metrics_open else ('login', frozenset())
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
    """At most ``limit`` failed logins per client address per ``window`` seconds,
    counted in the metadata store: one budget for every worker and replica, so
    spreading attempts over them buys an attacker nothing (issue 14). Store calls
    run off the event loop, as every store call does.

    Attempts still being checked count too, per process: a burst of concurrent
    wrong passwords would otherwise all pass the check before the first failure
    is counted, and queue for bcrypt. So one process never checks more than the
    budget left, and P processes at most P times it (a right password still
    writes nothing, so logins keep working while the store cannot write)."""

    def __init__(self, store: MetadataStore, limit: int, window: float = 60.0):
        self.store = store
        self.limit = limit
        self.window = window
        self._checking: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def attempt(self, addr: str) -> AsyncIterator[Callable[[], Awaitable[None]]]:
        """Admit one password check of ``addr`` (429 when its budget is spent,
        counting the checks in flight); the body calls what it yields when the
        check failed, to count the failure before the attempt stops counting."""
        count, oldest_age = await self.store.failed_logins(addr, self.window)
        if count + self._checking.get(addr, 0) >= self.limit:
            retry = int(self.window - oldest_age) + 1 if count else 1
            raise RegistryError(
                ErrorCode.TOOMANYREQUESTS, 'too many failed logins; try again later',
                headers={'Retry-After': str(max(retry, 1))})
        self._checking[addr] = self._checking.get(addr, 0) + 1
        try:
            yield functools.partial(self.store.count_failed_login, addr, self.window)
        finally:
            left = self._checking[addr] - 1
            if left:
                self._checking[addr] = left
            else:
                del self._checking[addr]


class AccessControl:
    """Falcon middleware: authenticate, authorise, or challenge."""

    def __init__(self, mode: str, access: Access | AccessFile, htpasswd: Htpasswd | None,
                 issuer: TokenIssuer | None, logins: FailedLogins, *,
                 realm: str = '', health_open: bool = True, metrics_open: bool = False):
        self.mode = mode
        self.rules = access
        self.htpasswd = htpasswd
        self.issuer = issuer
        self.logins = logins
        self.realm = realm  # the token endpoint's URL; '' = this server's /token
        self.health_open = health_open
        self.metrics_open = metrics_open

    async def process_resource(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                               resource: Any, params: dict[str, Any]) -> None:
        if self.mode == 'none':
            return
        need = requirement(req.uri_template, req.method, health_open=self.health_open,
                           metrics_open=self.metrics_open)
        if need is None:
            return
        kind, actions = need
        if kind == 'login':
            await self.login(req)
            return
        name = params.get('name', '')
        route = getattr(req.context, 'route', None)
        if route is not None and route.proxied:
            name = route.cache_name  # issue 13: rules name what is cached
        scope = {'base': None, 'catalog': 'registry:catalog:*'}.get(
            kind, _scope(name, actions))
        source = _mount_source(req)
        if source is not None:
            # end-11: a mount reads its source, so the challenge names both scopes
            # (as CNCF distribution does) and one token can carry them.
            scope = f'{scope} {_scope(source, frozenset({"pull"}))}'
        principal = await self.authenticate(req, scope)
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

    @property
    def access(self) -> Access:
        """The rules in force (the last good version of the access file)."""
        return self.rules.current if isinstance(self.rules, AccessFile) else self.rules

    def reload(self) -> None:
        """Re-read the users and rules files if they changed (blocking: a thread)."""
        for watched in (self.htpasswd, self.rules):
            if isinstance(watched, (Htpasswd, AccessFile)):
                watched.reload()

    def _check_password(self, user: str, password: str) -> bool:
        self.reload()
        assert self.htpasswd is not None
        return self.htpasswd.verify(user, password)

    def _user_exists(self, user: str) -> bool:
        self.reload()
        return self.htpasswd is not None and self.htpasswd.has_user(user)

    def readiness_checks(self) -> dict[str, Callable[[], str]]:
        """For /readyz: the users and rules in force are the files on disk."""
        checks: dict[str, Callable[[], str]] = {}
        for watched in (self.htpasswd, self.rules):
            if isinstance(watched, (Htpasswd, AccessFile)):
                checks[watched.kind] = _readiness(watched)
        return checks

    async def verify(self, req: falcon.asgi.Request, creds: tuple[str, str] | None
                     ) -> bool:
        """A password check, counted against the client's failed-login budget
        (429 once spent). Anything that is not a valid login counts: a wrong or
        unknown user, a password bcrypt cannot take (over 72 bytes)."""
        addr = req.remote_addr or '?'
        async with self.logins.attempt(addr) as failed:
            if creds and self.htpasswd and await in_password_thread(
                    self._check_password, *creds):
                return True
            await failed()
            return False

    async def login(self, req: falcon.asgi.Request) -> None:
        """Any valid user: Basic credentials (in both modes: scrapers and probes
        cannot fetch tokens) or, in token mode, any valid token."""
        header = req.get_header('Authorization')
        token = bearer_token(header)
        if token is not None:
            if self.issuer is not None:
                try:
                    await self.issuer.check(token)
                    return
                except AuthError:
                    pass
        elif header and await self.verify(req, basic_credentials(header)):
            return
        raise RegistryError(ErrorCode.UNAUTHORIZED, 'authentication required',
                            headers={'WWW-Authenticate': _basic_challenge()})

    async def authenticate(self, req: falcon.asgi.Request, scope: str | None
                           ) -> Principal:
        header = req.get_header('Authorization')
        if not header:
            return Principal(ANONYMOUS)
        if self.mode == 'basic':
            creds = basic_credentials(header)
            if await self.verify(req, creds):
                assert creds is not None
                return Principal(creds[0], self.access.groups_of(creds[0]))
            raise self.challenge(req, scope, 'invalid credentials')
        token = bearer_token(header)
        if token is None or self.issuer is None:
            raise self.challenge(req, scope, 'a bearer token is required')
        try:
            claims = await self.issuer.check(token)
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
            value = _basic_challenge()
        else:
            service = self.issuer.service if self.issuer else REALM
            # An absolute realm: c/image and ggcr cannot use a relative one. The
            # Host it is built from was validated (RequestGuard: 400 otherwise).
            realm = self.realm or f'{req.prefix}/token'
            value = f'Bearer realm={_quoted(realm)},service={_quoted(service)}'
            if scope:
                value += f',scope={_quoted(scope)}'
            if error:
                value += f',error={_quoted(error)}'
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
        self._issuer()
        creds = basic_credentials(req.get_header('Authorization'))
        principal = await self._login(req, creds)
        offline = (req.get_param('offline_token') or '').lower() == 'true'
        # Several scopes come as repeated parameters or space-separated in one.
        scopes = [s for value in query_values(req, 'scope') for s in value.split()]
        await self._answer(resp, principal, scopes,
                           refresh=offline and creds is not None)

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """POST /token (OAuth2 form): grant_type=password or refresh_token."""
        issuer = self._issuer()  # before the body: nothing is read for a 404
        form = dict(parse_qsl((await _read_form(req)).decode('utf-8', 'replace')))
        grant = form.get('grant_type')
        if grant == 'password':
            creds = (form.get('username', ''), form.get('password', ''))
            principal = await self._login(req, creds)
            refresh = form.get('access_type') == 'offline'
        elif grant == 'refresh_token':
            try:
                claims = await issuer.check(form.get('refresh_token', ''),
                                            refresh=True)
            except AuthError as ex:
                raise RegistryError(ErrorCode.UNAUTHORIZED, str(ex)) from None
            user = claims['sub']
            # A refresh token outlives edits: the user must still exist, and what
            # the new token grants comes from the rules now, not from the old token.
            if not await in_password_thread(self.control._user_exists, user):
                raise RegistryError(ErrorCode.UNAUTHORIZED,
                                    'invalid refresh token: no such user')
            principal = Principal(user, self.control.access.groups_of(user))
            refresh = False
        else:
            raise RegistryError(ErrorCode.UNSUPPORTED, 'unsupported grant_type',
                                detail={'grant_type': (grant or '')[:50]}, status=400)
        await self._answer(resp, principal, form.get('scope', '').split(),
                           refresh=refresh)

    def _issuer(self) -> TokenIssuer:
        if self.control.issuer is None:
            raise RegistryError(ErrorCode.UNSUPPORTED, 'token auth is not enabled',
                                status=404)
        return self.control.issuer

    async def _login(self, req: falcon.asgi.Request, creds: tuple[str, str] | None
                     ) -> Principal:
        if creds is None:
            return Principal(ANONYMOUS)
        if not await self.control.verify(req, creds):
            raise RegistryError(ErrorCode.UNAUTHORIZED, 'invalid credentials',
                                headers={'WWW-Authenticate': _basic_challenge()})
        return Principal(creds[0], self.control.access.groups_of(creds[0]))

    async def _answer(self, resp: falcon.asgi.Response, principal: Principal,
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
        token, ttl, issued_at = await issuer.issue(principal.name, granted)
        body: dict[str, Any] = {'token': token, 'access_token': token,
                                'expires_in': ttl, 'issued_at': issued_at}
        if refresh and not principal.anonymous:
            body['refresh_token'] = (await issuer.issue(principal.name, [],
                                                        refresh=True))[0]
        resp.media = body
        resp.set_header('Cache-Control', 'no-store')


async def _read_form(req: falcon.asgi.Request) -> bytes:
    """The form, at most TOKEN_FORM_MAX bytes: a larger declared length is refused
    before a byte is read, a body that outgrows it while streaming is cut off."""
    declared = content_length(req)
    if declared is not None and declared > TOKEN_FORM_MAX:
        raise _form_too_large()
    body = bytearray()
    async for chunk in request_body(req):
        body += chunk
        if len(body) > TOKEN_FORM_MAX:
            raise _form_too_large()
    return bytes(body)


def _form_too_large() -> RegistryError:
    return RegistryError(ErrorCode.SIZE_INVALID, 'token request too large',
                         detail={'rule': f'a token request is at most {TOKEN_FORM_MAX} '
                                         f'bytes'},
                         status=413, headers={'Connection': 'close'})


def _readiness(watched: Htpasswd | AccessFile) -> Callable[[], str]:
    def check() -> str:
        watched.reload()
        return watched.error or 'ok'

    return check


def _quoted(value: str) -> str:
    """An RFC 9110 §5.6.4 quoted-string: a quote or backslash in a value can never
    end it early and add parameters."""
    return '"' + value.replace('\\', '\\\\').replace('"', '\\"') + '"'


def _basic_challenge() -> str:
    return f'Basic realm="{REALM}", charset="UTF-8"'


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

