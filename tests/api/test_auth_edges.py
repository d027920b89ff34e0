"""Access control's edges, in-process: every one fails closed.

Long passwords, refresh tokens of deleted users, the token endpoint's body bound,
the Host header behind the Bearer realm, the operations endpoints with auth on,
/readyz after a bad htpasswd edit, and bcrypt kept off the event loop.
(tests/e2e/test_auth.py has the same over a real socket where the wire matters.)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import bcrypt
import falcon.testing
import httpx
import jwt
import pytest

from oci_ref.api.access import TOKEN_FORM_MAX
from oci_ref.app import create_app
from oci_ref.config import Config, ConfigError
from tests.backends import Backend, PostgresBackend
from tests.interop.auth import basic_header, htpasswd_entry, parse_challenge, write_htpasswd
from tests.support import InProcess, Resp, assert_error

USERS = {'dev': 'dev-password-1', 'ops': 'ops-password-2'}
FORM = {'Content-Type': 'application/x-www-form-urlencoded'}


@pytest.fixture
def htpasswd(tmp_path: Path) -> Path:
    return write_htpasswd(tmp_path / 'htpasswd', USERS, cost=4)


def app(tmp_path: Path, htpasswd: Path | None, auth: str, **settings: Any) -> InProcess:
    config = Config(root=tmp_path / 'data', auth=auth, htpasswd=htpasswd, **settings)
    return InProcess(create_app(config.validated()))


def post_form(c: InProcess, fields: dict[str, str], **kw: Any) -> Resp:
    return c.post('/token', content=urlencode(fields).encode(), headers=FORM, **kw)


# ------------------------------------------------------------ long passwords ----
@pytest.mark.parametrize('way', ['basic', 'token GET', 'token POST'])
def test_a_password_over_72_bytes_is_401_and_counts_as_a_failed_login(
        tmp_path: Path, htpasswd: Path, way: str) -> None:
    """Before: bcrypt raised, the client got 500, and the attempt was not counted
    (so unlimited). Now: 401 each time, and the failed-login limit applies."""
    c = app(tmp_path, htpasswd, way.split()[0], login_failures=3)
    long = 'x' * 73

    def attempt(user: str, password: str) -> Resp:
        if way == 'token POST':
            return post_form(c, {'grant_type': 'password', 'username': user,
                                 'password': password, 'service': 'oci-ref'})
        url = '/v2/' if way == 'basic' else '/token?service=oci-ref'
        return c.get(url, headers={'Authorization': basic_header(user, password)})

    for user in ('dev', 'nobody', 'dev'):
        assert_error(attempt(user, long), 401, 'UNAUTHORIZED')
    r = attempt('dev', USERS['dev'])  # the budget is spent, even for the right one
    assert_error(r, 429, 'TOOMANYREQUESTS')
    assert int(r.headers['retry-after']) >= 1


# ------------------------------------------------- the login budget's store ----
@contextmanager
def login_writes_held(backend: Backend) -> Iterator[None]:
    """Writes to the failed-login counts held from outside (another process's long
    transaction); reads still go through."""
    if isinstance(backend, PostgresBackend):
        import psycopg

        with psycopg.connect(backend.metadata_store) as conn:
            conn.execute('LOCK TABLE login_failures IN EXCLUSIVE MODE')
            try:
                yield
            finally:
                conn.rollback()
    else:
        with backend.write_lock_held():
            yield


@pytest.mark.parametrize('backend', ['sqlite+filesystem', 'postgresql+filesystem'],
                         indirect=True)
def test_a_failed_login_the_store_cannot_count_is_a_503_never_a_pass(
        backend: Backend, htpasswd: Path) -> None:
    """The failed-login counts live in the metadata store (shared by every worker
    and replica): when a failure cannot be counted the answer is a 503 naming the
    store (fail closed: never a 500, never an uncounted attempt); a right password
    writes nothing and still logs in."""
    registry = backend.registry(busy_timeout_ms=300)
    config = backend.config(auth='basic', htpasswd=htpasswd, busy_timeout_ms=300,
                            login_failures=2).validated()
    c = InProcess(create_app(config, registry=registry))
    try:
        with login_writes_held(backend):
            r = c.get('/v2/', headers={'Authorization': basic_header('dev', 'wrong')})
            error = assert_error(r, 503, 'UNAVAILABLE')
            assert 'metadata' in error['message'], error
            assert c.get('/v2/', headers={'Authorization': basic_header(
                'dev', USERS['dev'])}).status_code == 200
        for _ in range(2):
            r = c.get('/v2/', headers={'Authorization': basic_header('dev', 'wrong')})
            assert_error(r, 401, 'UNAUTHORIZED')
        r = c.get('/v2/', headers={'Authorization': basic_header('dev', USERS['dev'])})
        assert_error(r, 429, 'TOOMANYREQUESTS')
    finally:
        registry.close()


@pytest.mark.parametrize('auth', ['basic', 'token'])
def test_a_burst_of_wrong_passwords_checks_no_more_than_the_budget(
        tmp_path: Path, htpasswd: Path, auth: str) -> None:
    """Twenty wrong passwords sent at once, a budget of 3: the checks still in
    flight count, so exactly 3 are checked (401) and 17 refused at once (429),
    not 20 bcrypt guesses queued behind a count that had not yet moved."""
    config = Config(root=tmp_path / 'data', auth=auth, htpasswd=htpasswd,
                    login_failures=3).validated()
    url = '/v2/' if auth == 'basic' else '/token'
    wrong = {'Authorization': basic_header('dev', 'wrong')}

    async def burst() -> list[int]:
        async with falcon.testing.ASGIConductor(create_app(config)) as c:
            results = await asyncio.gather(*(
                c.simulate_get(url, headers=wrong, remote_addr='192.0.2.7',
                               params={'service': 'oci-ref'})
                for _ in range(20)))
        return [r.status_code for r in results]

    statuses = asyncio.run(burst())
    assert sorted(statuses) == [401] * 3 + [429] * 17, statuses


# ---------------------------------------------------------- refresh tokens ----
def test_a_refresh_token_stops_working_when_its_user_is_deleted(tmp_path: Path,
                                                                htpasswd: Path) -> None:
    c = app(tmp_path, htpasswd, 'token')
    tokens = {}
    for user in USERS:
        r = post_form(c, {'grant_type': 'password', 'username': user,
                          'password': USERS[user], 'service': 'oci-ref',
                          'access_type': 'offline'})
        assert r.status_code == 200, r.content
        tokens[user] = r.json()['refresh_token']

    def refresh(user: str) -> Resp:
        return post_form(c, {'grant_type': 'refresh_token', 'service': 'oci-ref',
                             'refresh_token': tokens[user],
                             'scope': 'repository:team/app:pull,push,delete'})

    assert refresh('dev').status_code == 200
    # dev leaves: the file is edited under the running server.
    htpasswd.write_text(htpasswd_entry('ops', USERS['ops'], 4) + '\n')
    error = assert_error(refresh('dev'), 401, 'UNAUTHORIZED')
    assert 'token' not in error
    r = refresh('ops')
    assert r.status_code == 200, r.content
    # dev comes back (a new password): the old refresh token works again only for
    # a user of that name, with what the rules grant now (no access file: all).
    htpasswd.write_text(htpasswd.read_text() + htpasswd_entry('dev', 'new-pw', 4) + '\n')
    assert refresh('dev').status_code == 200


RULES = '''
[[rule]]
repository = "team/*"
principals = ["dev"]
actions = [{actions}]
'''


def test_a_refresh_grants_what_the_rules_say_now(tmp_path: Path, htpasswd: Path) -> None:
    """The access file is re-read at every login and refresh: a refresh after an
    edit grants the new rules; a broken edit keeps the last good rules in force
    and /readyz names it."""
    rules = tmp_path / 'access.toml'
    rules.write_text(RULES.format(actions='"pull", "push", "delete"'))
    c = app(tmp_path, htpasswd, 'token', access=rules)
    r = post_form(c, {'grant_type': 'password', 'username': 'dev',
                      'password': USERS['dev'], 'access_type': 'offline'})
    refresh_token = r.json()['refresh_token']

    def granted() -> list[str]:
        r = post_form(c, {'grant_type': 'refresh_token', 'refresh_token': refresh_token,
                          'scope': 'repository:team/app:pull,push,delete'})
        assert r.status_code == 200, r.content
        claims = jwt.decode(r.json()['token'], options={'verify_signature': False})
        return list(claims['access'][0]['actions'])

    assert granted() == ['delete', 'pull', 'push']
    rules.write_text(RULES.format(actions='"pull"'))
    assert granted() == ['pull']
    rules.write_text('[[rule]]\nrepository = \n')  # not TOML
    assert granted() == ['pull']
    error = assert_error(c.get('/readyz'), 503, 'UNAVAILABLE')
    assert set(error['detail']) == {'rules'}, error
    rules.write_text(RULES.format(actions='"pull", "push"'))
    assert granted() == ['pull', 'push']
    assert c.get('/readyz').json()['rules'] == 'ok'


def test_a_refresh_token_is_refused_without_an_htpasswd_file(tmp_path: Path,
                                                             htpasswd: Path) -> None:
    """A token server without users has no one a refresh token could be for: a
    refresh token signed with its key (from an earlier run with users) is refused."""
    with_users = app(tmp_path, htpasswd, 'token')
    r = post_form(with_users, {'grant_type': 'password', 'username': 'dev',
                               'password': USERS['dev'], 'access_type': 'offline'})
    refresh = r.json()['refresh_token']
    without = app(tmp_path, None, 'token', anonymous_read=True)
    r = post_form(without, {'grant_type': 'refresh_token', 'refresh_token': refresh})
    assert_error(r, 401, 'UNAUTHORIZED')


# ------------------------------------------------------- the token endpoint ----
def test_a_token_form_over_the_bound_is_413(tmp_path: Path, htpasswd: Path) -> None:
    c = app(tmp_path, htpasswd, 'token')
    fields = {'grant_type': 'password', 'username': 'dev', 'password': USERS['dev']}
    padded = urlencode({**fields, 'scope': 'repository:a:pull ' * 100}).encode()
    assert len(padded) < TOKEN_FORM_MAX
    assert c.post('/token', content=padded, headers=FORM).status_code == 200
    big = urlencode({**fields, 'scope': 'x' * TOKEN_FORM_MAX}).encode()
    error = assert_error(c.post('/token', content=big, headers=FORM), 413,
                         'SIZE_INVALID')
    assert str(TOKEN_FORM_MAX) in error['detail']['rule']


@pytest.mark.parametrize('auth', ['none', 'basic'])
def test_the_token_endpoint_is_404_without_token_auth(tmp_path: Path, htpasswd: Path,
                                                      auth: str) -> None:
    """Nothing is read: a POST declaring a huge body is 404 at once."""
    c = app(tmp_path, htpasswd if auth == 'basic' else None, auth)
    assert_error(c.get('/token?service=oci-ref'), 404, 'UNSUPPORTED')
    body = b'grant_type=password&username=dev&password=x'
    assert_error(c.post('/token', content=body, headers=FORM), 404, 'UNSUPPORTED')
    r = c.tc.simulate_post('/token', body=b'x', headers={
        **FORM, 'Content-Length': str(1 << 30)})
    assert r.status_code == 404
    assert c.put('/token').status_code == 405


# -------------------------------------------------------- the Bearer realm ----
INJECTION = 'evil.example",service="evil'


@pytest.mark.parametrize('host', [INJECTION, 'evil.example"', 'a b', 'a/b', 'a\\b',
                                  'user@host', 'a:b:c', 'a:123456'])
def test_an_invalid_host_is_400_and_never_reaches_a_challenge(
        tmp_path: Path, htpasswd: Path, host: str) -> None:
    c = app(tmp_path, htpasswd, 'token')
    r = c.tc.simulate_get('/v2/', host=host)
    assert r.status_code == 400, (host, r.headers.get('www-authenticate'))
    assert 'www-authenticate' not in r.headers
    assert r.json['errors'][0]['code'] == 'UNSUPPORTED'
    assert 'Host' in r.json['errors'][0]['message']


def test_two_host_headers_are_400(tmp_path: Path, htpasswd: Path) -> None:
    c = app(tmp_path, htpasswd, 'token')
    r = c.tc.simulate_get('/v2/', host='a.example', headers=[('Host', 'b.example')])
    assert r.status_code == 400
    assert 'www-authenticate' not in r.headers


@pytest.mark.parametrize('host', ['registry.example:5000', '127.0.0.1:5000',
                                  '[::1]:5000', 'my_registry', 'r.example'])
def test_the_default_realm_is_this_servers_token_url(tmp_path: Path, htpasswd: Path,
                                                     host: str) -> None:
    c = app(tmp_path, htpasswd, 'token')
    r = c.tc.simulate_get('/v2/team/app/tags/list', host=host)
    assert r.status_code == 401
    scheme, params = parse_challenge(r.headers['www-authenticate'])
    assert (scheme, params['realm'], params['service']) == (
        'bearer', f'http://{host}/token', 'oci-ref')
    assert params['scope'] == 'repository:team/app:pull'


def test_a_configured_realm_is_used_whatever_the_host(tmp_path: Path,
                                                      htpasswd: Path) -> None:
    realm = 'https://auth.example:8443/token'
    c = app(tmp_path, htpasswd, 'token', token_realm=realm)
    for host in ('registry.example', '127.0.0.1:5000'):
        r = c.tc.simulate_get('/v2/', host=host)
        assert parse_challenge(r.headers['www-authenticate'])[1]['realm'] == realm
    for bad in ('auth.example/token', 'https://a.example/t",service="x',
                'https://a b/token', 'ftp://a.example/token'):
        with pytest.raises(ConfigError, match='token_realm'):
            Config(root=tmp_path, auth='token', token_realm=bad).validated()


# ------------------------------------------- /metrics, /healthz and /readyz ----
@pytest.mark.parametrize('auth', ['basic', 'token'])
def test_metrics_need_a_login_and_health_is_open_by_default(
        tmp_path: Path, htpasswd: Path, auth: str) -> None:
    c = app(tmp_path, htpasswd, auth)
    for path in ('/healthz', '/readyz'):
        assert c.get(path).status_code == 200, path
    for headers in ({}, {'Authorization': basic_header('dev', 'wrong')},
                    {'Authorization': 'Bearer not-a-token'}):
        r = c.get('/metrics', headers=headers)
        assert_error(r, 401, 'UNAUTHORIZED')
        assert r.headers['www-authenticate'].startswith('Basic realm=')
    # A Basic login works in both modes (scrapers cannot fetch tokens) ...
    r = c.get('/metrics', headers={'Authorization': basic_header('dev', USERS['dev'])})
    assert r.status_code == 200
    assert b'oci_ref_objects' in r.content
    if auth == 'token':  # ... and so does any valid token.
        token = c.get('/token?service=oci-ref', headers={
            'Authorization': basic_header('ops', USERS['ops'])}).json()['token']
        assert c.get('/metrics', headers={
            'Authorization': f'Bearer {token}'}).status_code == 200


def test_metrics_open_and_health_closed_are_settings(tmp_path: Path,
                                                     htpasswd: Path) -> None:
    c = app(tmp_path, htpasswd, 'basic', metrics_open=True, health_open=False)
    assert c.get('/metrics').status_code == 200
    login = {'Authorization': basic_header('ops', USERS['ops'])}
    for path in ('/healthz', '/readyz'):
        assert_error(c.get(path), 401, 'UNAUTHORIZED')
        assert c.get(path, headers=login).status_code == 200
    # Without auth every operations endpoint is open whatever the settings say.
    c = app(tmp_path / 'open', None, 'none', health_open=False)
    for path in ('/healthz', '/readyz', '/metrics'):
        assert c.get(path).status_code == 200


def test_readyz_names_a_bad_htpasswd_edit_while_the_last_good_file_serves(
        tmp_path: Path, htpasswd: Path) -> None:
    c = app(tmp_path, htpasswd, 'basic')
    r = c.get('/readyz')
    assert r.status_code == 200 and r.json()['users'] == 'ok'
    good = htpasswd.read_text()
    htpasswd.write_text(good + 'broken line without a hash\n')
    dev = {'Authorization': basic_header('dev', USERS['dev'])}
    for _ in range(2):
        assert c.get('/v2/', headers=dev).status_code == 200  # never a 500
        error = assert_error(c.get('/readyz'), 503, 'UNAVAILABLE')
        assert 'line 3' in error['detail']['users'], error
        assert 'broken line' not in error['detail']['users']
    htpasswd.write_text(good)
    assert c.get('/readyz').json()['users'] == 'ok'


# ------------------------------------------------------------ off the loop ----
def test_a_slow_password_check_does_not_stall_other_requests(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cost-12 bcrypt check is held in flight (the real check runs once the test
    lets it go); meanwhile /healthz and an anonymous /v2/ of the same app, on the
    same event loop, are answered. With bcrypt on the loop nothing else could run
    until the check ended, and the answers would come after it."""
    path = tmp_path / 'htpasswd'
    path.write_text(htpasswd_entry('slow', 'slow-password', 12) + '\n')
    entered, release, finished = threading.Event(), threading.Event(), threading.Event()
    real = bcrypt.checkpw

    def held(password: bytes, hashed: bytes) -> bool:
        entered.set()
        release.wait(10)  # bounded: a stalled loop fails the test, never hangs it
        try:
            return bool(real(password, hashed))
        finally:
            finished.set()

    monkeypatch.setattr(bcrypt, 'checkpw', held)
    asgi = create_app(Config(root=tmp_path / 'data', auth='basic',
                             htpasswd=path).validated())

    async def scenario() -> list[tuple[str, int, bool]]:
        transport = httpx.ASGITransport(app=asgi)
        async with httpx.AsyncClient(transport=transport,
                                     base_url='http://registry.test') as c:
            slow = asyncio.create_task(c.get('/v2/', headers={
                'Authorization': basic_header('slow', 'slow-password')}))
            loop = asyncio.get_running_loop()
            assert await loop.run_in_executor(None, entered.wait, 10)
            seen = []
            for path in ('/healthz', '/v2/'):
                r = await c.get(path)
                seen.append((path, r.status_code, finished.is_set()))
            release.set()
            r = await slow
            seen.append(('slow login', r.status_code, finished.is_set()))
            return seen

    assert asyncio.run(scenario()) == [
        ('/healthz', 200, False), ('/v2/', 401, False), ('slow login', 200, True)]
