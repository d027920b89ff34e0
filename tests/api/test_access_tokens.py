"""The token endpoint (GET, POST, refresh; bad, forged and widened tokens), the
failed-login limit and bcrypt for unknown users, over the access-control world of
access_world.py."""

from __future__ import annotations

import base64
import json
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jwt
import pytest

from tests.api.access_world import (
    BASIC,
    PASSWORDS,
    TOKEN,
    WRONG,
    Headers,
    Mode,
    assert_unauthorized,
    auth_for,
    claims_of,
    get_token,
    make_world,
    token_url,
)
from tests.interop.auth import basic_header, write_htpasswd
from tests.support import (
    Resp,
    stored_token_key,
)

# ---------------------------------------------------------- token endpoint ----
RFC3339 = re.compile(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)')


def check_token_body(r: Resp) -> dict[str, Any]:
    assert r.status_code == 200, (r.status_code, r.content)
    assert r.headers['content-type'].startswith('application/json')
    body = r.json()
    assert body['token'] == body['access_token']
    assert isinstance(body['expires_in'], int) and body['expires_in'] >= 60
    assert RFC3339.fullmatch(body['issued_at']), body['issued_at']
    issued = datetime.fromisoformat(body['issued_at'].replace('Z', '+00:00'))
    assert issued.tzinfo is not None
    assert abs(issued.timestamp() - time.time()) < 120
    claims = claims_of(body['token'])
    assert claims['exp'] - claims['iat'] == body['expires_in']
    assert claims['aud'] == 'oci-ref'
    return dict(body)


def test_token_get_grants_the_intersection_of_asked_and_allowed(
        tmp_path: Path, htpasswd: Path, access_file: Path) -> None:
    world = make_world(tmp_path, TOKEN, htpasswd, access_file)
    scopes = ['repository:team/app:pull,push,delete', 'repository:team/sub/app:pull,push',
              'repository:teamx/app:pull', 'registry:catalog:*',
              'repository:other/app:pull,delete']
    r = world.app.get(token_url(scopes, account='reader', client_id='test'), headers={
        'Authorization': basic_header('reader', PASSWORDS['reader'])})
    body = check_token_body(r)
    assert 'refresh_token' not in body
    claims = claims_of(body['token'])
    assert claims['sub'] == 'reader'
    assert claims['access'] == [
        {'type': 'repository', 'name': 'team/app', 'actions': ['pull']},
        {'type': 'repository', 'name': 'team/sub/app', 'actions': ['pull']},
        {'type': 'repository', 'name': 'teamx/app', 'actions': []},
        {'type': 'registry', 'name': 'catalog', 'actions': ['*']},
        {'type': 'repository', 'name': 'other/app', 'actions': ['delete']},
    ]
    # Anonymous: a token, never an error, granting only what anonymous may do.
    body = check_token_body(world.app.get(token_url(
        [*scopes, 'repository:public/lib:pull,push'])))
    assert [g['actions'] for g in claims_of(body['token'])['access']] == [
        [], [], [], [], [], ['pull']]
    assert 'refresh_token' not in check_token_body(
        world.app.get(token_url(['repository:public/lib:pull'], offline_token='true')))
    # Bad credentials: 401, no token.
    r = world.app.get(token_url(scopes), headers={'Authorization': basic_header(*WRONG)})
    assert r.status_code == 401 and r.json()['errors'][0]['code'] == 'UNAUTHORIZED'
    assert 'token' not in r.json()


def test_token_post_password_and_refresh_token_grants(tmp_path: Path, htpasswd: Path,
                                                      access_file: Path) -> None:
    """OAuth2 POST form (distribution oauth.md), as containerd sends it."""
    world = make_world(tmp_path, TOKEN, htpasswd, access_file)
    form = {'grant_type': 'password', 'username': 'dev', 'password': PASSWORDS['dev'],
            'service': 'oci-ref', 'client_id': 'containerd-client',
            'scope': 'repository:team/app:pull,push repository:teamx/app:pull'}
    ctype = {'Content-Type': 'application/x-www-form-urlencoded'}
    body = check_token_body(world.app.post('/token', content=urlencode(form).encode(),
                                           headers=ctype))
    assert 'refresh_token' not in body
    assert claims_of(body['token'])['access'] == [
        {'type': 'repository', 'name': 'team/app', 'actions': ['pull', 'push']},
        {'type': 'repository', 'name': 'teamx/app', 'actions': []}]

    body = check_token_body(world.app.post('/token', content=urlencode(
        {**form, 'access_type': 'offline'}).encode(), headers=ctype))
    refresh = body['refresh_token']
    again = check_token_body(world.app.post('/token', content=urlencode({
        'grant_type': 'refresh_token', 'refresh_token': refresh, 'service': 'oci-ref',
        'client_id': 'x', 'scope': 'repository:team/sub/app:pull,push'}).encode(),
        headers=ctype))
    claims = claims_of(again['token'])
    assert claims['sub'] == 'dev'
    # Still the rules: dev may only pull under team/sub/.
    assert claims['access'] == [
        {'type': 'repository', 'name': 'team/sub/app', 'actions': ['pull']}]
    assert world.app.get('/v2/team/sub/app/tags/list', headers={
        'Authorization': f'Bearer {again["token"]}'}).status_code == 200

    # GET with offline_token=true and credentials also hands out a refresh token.
    body = check_token_body(world.app.get(
        token_url(['repository:team/app:pull'], offline_token='true', client_id='docker'),
        headers={'Authorization': basic_header('dev', PASSWORDS['dev'])}))
    assert body.get('refresh_token')

    def post(fields: dict[str, str]) -> Resp:
        return world.app.post('/token', content=urlencode(fields).encode(), headers=ctype)

    # A refresh token is not an access token, and the other way round.
    assert_unauthorized(world.app.get('/v2/team/app/tags/list', headers={
        'Authorization': f'Bearer {refresh}'}), 'bearer')
    r = post({'grant_type': 'refresh_token', 'refresh_token': body['token'],
              'service': 'oci-ref'})
    assert r.status_code == 401, r.content
    r = post({'grant_type': 'refresh_token', 'refresh_token': 'garbage',
              'service': 'oci-ref'})
    assert r.status_code == 401, r.content
    r = post({**form, 'password': 'wrong'})
    assert r.status_code == 401 and r.json()['errors'][0]['code'] == 'UNAUTHORIZED'
    assert 'token' not in r.json()
    r = post({**form, 'username': 'nobody'})
    assert r.status_code == 401
    r = post({'grant_type': 'client_credentials', 'service': 'oci-ref'})
    assert r.status_code == 400, r.content


def forge(claims: dict[str, Any], key: bytes, algorithm: str = 'HS256') -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def test_expired_forged_and_wrong_audience_tokens_are_401(tmp_path: Path, htpasswd: Path,
                                                          access_file: Path) -> None:
    world = make_world(tmp_path, TOKEN, htpasswd, access_file)
    _, token = get_token(world.app, 'admin', ['repository:team/app:pull,push,delete'])
    assert token is not None
    url = '/v2/team/app/tags/list'

    def status(tok: str) -> int:
        r = world.app.get(url, headers={'Authorization': f'Bearer {tok}'})
        if r.status_code == 401:
            assert_unauthorized(r, 'bearer')
        return r.status_code

    assert status(token) == 200
    key = stored_token_key(world.root)
    assert key is not None
    good = claims_of(token)
    now = int(time.time())
    assert status(forge(good, key)) == 200  # the forging itself is right
    bad = {
        'expired': forge({**good, 'iat': now - 900, 'nbf': now - 900, 'exp': now - 30},
                         key),
        'not yet valid': forge({**good, 'nbf': now + 600, 'exp': now + 900}, key),
        'wrong audience': forge({**good, 'aud': 'another-registry'}, key),
        'no audience': forge({k: v for k, v in good.items() if k != 'aud'}, key),
        'wrong issuer': forge({**good, 'iss': 'someone-else'}, key),
        'wrong key': forge(good, b'k' * 32),
        'refresh kind': forge({**good, 'typ': 'refresh'}, key),
        'alg none': (base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}')
                     .rstrip(b'=').decode() + '.' + token.split('.')[1] + '.'),
        'tampered': _tampered(token),
        'garbage': 'not.a.jwt',
    }
    assert {name: status(tok) for name, tok in bad.items()} == dict.fromkeys(bad, 401)
    # The /v2/ login check refuses them as well.
    for name, tok in bad.items():
        r = world.app.get('/v2/', headers={'Authorization': f'Bearer {tok}'})
        assert r.status_code == 401, name


def _tampered(token: str) -> str:
    """A token whose claims were widened after signing (signature kept)."""
    head, payload, sig = token.split('.')
    claims = json.loads(base64.urlsafe_b64decode(payload + '=' * (-len(payload) % 4)))
    claims['access'] = [{'type': 'repository', 'name': 'teamx/app',
                         'actions': ['pull', 'push', 'delete']}]
    claims['sub'] = 'admin'
    raw = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b'=').decode()
    return f'{head}.{raw}.{sig}'


def test_tokens_are_bound_to_their_scope(tmp_path: Path, htpasswd: Path,
                                         access_file: Path) -> None:
    """A pull token does not push; a token for one repository does not open
    another (even one its holder could get a token for); Basic credentials are no
    substitute for a token."""
    world = make_world(tmp_path, TOKEN, htpasswd, access_file)
    pull = auth_for(world, 'dev', ['repository:team/app:pull'])
    assert world.app.get('/v2/team/app/tags/list', headers=pull).status_code == 200
    params = assert_unauthorized(world.app.post('/v2/team/app/blobs/uploads/',
                                                headers=pull), 'bearer')
    assert params['error'] == 'insufficient_scope'
    assert params['scope'] == 'repository:team/app:pull,push'
    params = assert_unauthorized(world.app.get('/v2/public/lib/tags/list',
                                               headers=pull), 'bearer')
    assert params['error'] == 'insufficient_scope'
    assert params['scope'] == 'repository:public/lib:pull'
    r = world.app.get('/v2/team/app/tags/list', headers={
        'Authorization': basic_header('dev', PASSWORDS['dev'])})
    assert_unauthorized(r, 'bearer')
    # In basic mode a bearer token is not a credential; /token is not served.
    basic = make_world(tmp_path / 'basic', BASIC, htpasswd, access_file)
    assert_unauthorized(basic.app.get('/v2/team/app/tags/list', headers=pull), 'basic')
    assert basic.app.get(token_url(['repository:team/app:pull'])).status_code == 404


# ---------------------------------------------------------- failed logins ----
@pytest.mark.parametrize('mode', [BASIC, TOKEN], ids=['basic', 'token'])
def test_failed_logins_are_limited_with_429_and_retry_after(
        mode: Mode, tmp_path: Path, htpasswd: Path, access_file: Path) -> None:
    world = make_world(tmp_path, mode, htpasswd, access_file, login_failures=3)
    tc = world.app.tc
    wrong = {'Authorization': basic_header(*WRONG)}
    right = {'Authorization': basic_header('dev', PASSWORDS['dev'])}
    url = '/v2/team/app/tags/list' if mode.auth == 'basic' else token_url(
        ['repository:team/app:pull'])

    def call(headers: Headers, addr: str = '192.0.2.1') -> Any:
        return tc.simulate_get(url.partition('?')[0], query_string=url.partition('?')[2],
                               headers=headers, remote_addr=addr)

    assert call(right).status_code == 200  # successes do not count
    for _ in range(3):
        assert call(wrong).status_code == 401
    for headers in (wrong, right):  # locked out: even the right password waits
        r = call(headers)
        assert r.status_code == 429, r.content
        assert r.json['errors'][0]['code'] == 'TOOMANYREQUESTS'
        assert 1 <= int(r.headers['retry-after']) <= 61
    if mode.auth == 'token':  # the POST form counts against the same budget
        form = urlencode({'grant_type': 'password', 'username': 'dev',
                          'password': PASSWORDS['dev'], 'service': 'oci-ref'})
        r = tc.simulate_post('/token', body=form, remote_addr='192.0.2.1', headers={
            'Content-Type': 'application/x-www-form-urlencoded'})
        assert r.status_code == 429
    # Another client is not locked out, and anonymous requests are not logins.
    assert call(right, addr='192.0.2.2').status_code == 200
    anonymous = call({}, addr='192.0.2.1')
    assert anonymous.status_code != 429


# ------------------------------------------------------------ constant time ----
def test_unknown_users_cost_a_bcrypt_check(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path, htpasswd: Path,
                                           access_file: Path) -> None:
    """Htpasswd.verify runs bcrypt.checkpw for unknown users too (over HTTP, basic
    and token)."""
    import bcrypt

    calls: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return bool(real(password, hashed))

    monkeypatch.setattr(bcrypt, 'checkpw', counting)
    for mode in (BASIC, TOKEN):
        world = make_world(tmp_path / mode.name, mode, htpasswd, access_file)
        url = '/v2/' if mode.auth == 'basic' else token_url([])
        for user, password in [('nobody', 'x'), ('dev', 'wrong'),
                               ('dev', PASSWORDS['dev'])]:
            calls.clear()
            r = world.app.get(url, headers={'Authorization': basic_header(user, password)})
            assert r.status_code == (200 if password == PASSWORDS['dev'] else 401)
            assert len(calls) == 1, (mode.name, user, calls)
            assert calls[0].startswith((b'$2y$', b'$2b$', b'$2a$'))


def test_a_file_written_by_htpasswd_B_logs_in(tmp_path: Path, access_file: Path) -> None:
    """A file made by the real `htpasswd -B` (apache2-utils; under CI=true it must
    be installed): its users log in, in basic and token mode, and a wrong password
    is refused."""
    users = {'dev': PASSWORDS['dev'], 'reader': PASSWORDS['reader']}
    path = write_htpasswd(tmp_path / 'htpasswd', users, binary=True)
    lines = path.read_text().splitlines()
    assert [line.split(':', 1)[0] for line in lines] == list(users)
    for line in lines:
        assert re.fullmatch(r'[^:]+:\$2y\$05\$[./A-Za-z0-9]{53}', line), line
    for mode in (BASIC, TOKEN):
        world = make_world(tmp_path / mode.name, mode, path, access_file)
        url = '/v2/' if mode.auth == 'basic' else token_url([])
        for user, password in users.items():
            r = world.app.get(url, headers={'Authorization': basic_header(user, password)})
            assert r.status_code == 200, (mode.name, user, r.content)
        r = world.app.get(url, headers={'Authorization': basic_header('dev', 'wrong')})
        assert r.status_code == 401
