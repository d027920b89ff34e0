"""Access control on a real `oci-ref serve`: no secret in any log line, tokens that
every worker accepts, htpasswd edits without a restart, and the ``oci_registry``
fixture starting an authenticated registry."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from tests.interop.auth import (
    AuthServer,
    RegistryAuth,
    basic_header,
    htpasswd_entry,
    write_htpasswd,
)
from tests.support import OCI_MANIFEST, push_image, stored_token_key

pytestmark = pytest.mark.e2e

USERS = {
    'alice': 'alice-S3cret-pw-7781',
    'bob': 'b0b-secret: with colon',
}
WRONG_PASSWORD = 'wrong-but-still-secret-4417'
# Past bcrypt's 72 bytes: a 500 with a traceback before, now a plain 401.
LONG_PASSWORD = 'long-secret-' + 'Q7' * 40
ACCESS = '''
[[rule]]
repository = "alice/*"
principals = ["alice"]
actions = ["pull", "push", "delete"]

[[rule]]
repository = "*"
principals = ["*"]
actions = ["pull"]

[catalog]
principals = ["alice"]
'''


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    access = tmp_path / 'access.toml'
    access.write_text(ACCESS)
    return {'htpasswd': write_htpasswd(tmp_path / 'htpasswd', USERS), 'access': access}


def start(tmp_path: Path, mode: str, files: dict[str, Path], *extra: str) -> AuthServer:
    return AuthServer(tmp_path / mode / 'data', '--auth', mode,
                      '--htpasswd', str(files['htpasswd']),
                      '--access', str(files['access']),
                      '--log-level', 'debug', '--access-log', *extra)


def secrets_in(text: str, secrets: dict[str, str]) -> list[str]:
    return [name for name, value in secrets.items() if value and value in text]


def test_no_secret_in_any_log_line(tmp_path: Path, files: dict[str, Path]) -> None:
    """Basic and token logins (GET and POST /token, refresh tokens, wrong and
    over-long passwords, bad tokens) and pushes, with the access log on at debug
    level: no password, no base64 credentials, no token, no signing key in the
    server's output."""
    secrets: dict[str, str] = {}
    for user, password in [*USERS.items(), ('alice', WRONG_PASSWORD),
                           ('alice', LONG_PASSWORD)]:
        secrets[f'password of {user}'] = password
        header = basic_header(user, password)
        secrets[f'base64 credentials of {user}'] = header.split()[1]
        secrets[f'base64 credentials of {user} (unpadded)'] = header.split()[1].rstrip('=')
    logs = {}

    # Basic.
    srv = start(tmp_path, 'basic', files)
    try:
        with srv.client('alice', USERS['alice']) as c:
            assert c.get('/v2/').status_code == 200
            push_image(c, 'alice/app', 'v1', seed='basic')
            assert c.get('/v2/alice/app/manifests/v1',
                         headers={'Accept': OCI_MANIFEST}).status_code == 200
        with srv.client('bob', USERS['bob']) as c:
            assert c.post('/v2/alice/app/blobs/uploads/').status_code == 403
        with srv.client('alice', WRONG_PASSWORD) as c:
            assert c.get('/v2/').status_code == 401
        with srv.client('alice', LONG_PASSWORD) as c:
            assert c.get('/v2/').status_code == 401
        with srv.client('nobody', WRONG_PASSWORD) as c:
            assert c.get('/v2/').status_code == 401
        # Credentials in the URL (user:password@host) end up as a Basic header.
        url = srv.url.replace('http://', f'http://bob:{USERS["bob"].replace(":", "%3A")}@')
        assert httpx.get(url + '/v2/', timeout=30).status_code == 200
    finally:
        srv.stop()
    logs['basic'] = srv.log.read_text(errors='replace')

    # Token.
    srv = start(tmp_path, 'token', files)
    try:
        key = stored_token_key(srv.root)
        assert key is not None
        secrets['token key (hex)'] = key.hex()
        secrets['token key (base64)'] = base64.b64encode(key).decode().rstrip('=')
        secrets['token key (base64url)'] = (
            base64.urlsafe_b64encode(key).decode().rstrip('='))
        auth = RegistryAuth('alice', USERS['alice'])
        with httpx.Client(base_url=srv.url, timeout=60, auth=auth) as c:
            push_image(c, 'alice/app', 'v1', seed='token')
            assert c.get('/v2/alice/app/tags/list').status_code == 200
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            r = c.get('/token', params={'service': 'oci-ref', 'offline_token': 'true',
                                        'client_id': 'docker',
                                        'scope': 'repository:alice/app:pull'},
                      headers={'Authorization': basic_header('alice', USERS['alice'])})
            assert r.status_code == 200
            tokens = [r.json()['token'], r.json()['refresh_token']]
            form = {'grant_type': 'password', 'username': 'bob', 'password': USERS['bob'],
                    'service': 'oci-ref', 'access_type': 'offline', 'client_id': 'ctr',
                    'scope': 'repository:alice/app:pull,push'}
            r = c.post('/token', content=urlencode(form), headers={
                'Content-Type': 'application/x-www-form-urlencoded'})
            assert r.status_code == 200
            tokens += [r.json()['token'], r.json()['refresh_token']]
            r = c.post('/token', content=urlencode({
                'grant_type': 'refresh_token', 'refresh_token': tokens[-1],
                'service': 'oci-ref', 'scope': 'repository:alice/app:pull'}), headers={
                'Content-Type': 'application/x-www-form-urlencoded'})
            assert r.status_code == 200
            tokens.append(r.json()['token'])
            for wrong in (WRONG_PASSWORD, LONG_PASSWORD):
                r = c.post('/token', content=urlencode({**form, 'password': wrong}),
                           headers={'Content-Type': 'application/x-www-form-urlencoded'})
                assert r.status_code == 401
            r = c.get('/token', params={'service': 'oci-ref'},
                      headers={'Authorization': basic_header('alice', WRONG_PASSWORD)})
            assert r.status_code == 401
            # Denied (insufficient scope) and broken tokens.
            r = c.post('/v2/alice/app/blobs/uploads/',
                       headers={'Authorization': f'Bearer {tokens[2]}'})
            assert r.status_code == 401
            forged = tokens[0][:-6] + ('AAAAAA' if not tokens[0].endswith('AAAAAA')
                                       else 'BBBBBB')
            assert c.get('/v2/alice/app/tags/list', headers={
                'Authorization': f'Bearer {forged}'}).status_code == 401
            secrets['forged token'] = forged
            # A Basic header sent to a token registry is refused, and not logged.
            assert c.get('/v2/alice/app/tags/list', headers={
                'Authorization': basic_header('alice', USERS['alice'])}).status_code == 401
        tokens += auth.tokens
    finally:
        srv.stop()
    logs['token'] = srv.log.read_text(errors='replace')
    assert tokens
    for i, token in enumerate(tokens):
        secrets[f'token {i}'] = token
        secrets[f'token {i} signature'] = token.rsplit('.', 1)[1]

    for mode, text in logs.items():
        assert 'Traceback' not in text, f'{mode} server log:\n{text[-3000:]}'
        # The log is really on: request lines were written.
        assert re.search(r'"(GET|POST|PUT) /v2/\S* HTTP/1\.1" 20[12]', text), text[-2000:]
        assert '401' in text
        leaked = secrets_in(text, secrets)
        assert not leaked, f'{mode} server log holds {leaked}:\n{text[-3000:]}'
    assert '/token' in logs['token']


def test_tokens_from_one_worker_are_accepted_by_every_worker(
        tmp_path: Path, files: dict[str, Path]) -> None:
    """With 2 workers the signing key is shared: tokens fetched on fresh
    connections (landing on either worker) always work."""
    srv = AuthServer(tmp_path / 'data', '--auth', 'token', '--htpasswd',
                     str(files['htpasswd']), '--access', str(files['access']),
                     '--workers', '2')
    try:
        for i in range(16):
            with httpx.Client(base_url=srv.url, timeout=30) as c:
                r = c.get('/token', params={'service': 'oci-ref',
                                            'scope': 'repository:alice/app:pull,push'},
                          headers={'Authorization': basic_header('alice', USERS['alice'])})
                assert r.status_code == 200
                token = r.json()['token']
            with httpx.Client(base_url=srv.url, timeout=30, headers={
                    'Authorization': f'Bearer {token}'}) as c:
                assert c.get('/v2/').status_code == 200, i
                r = c.post('/v2/alice/app/blobs/uploads/')
                assert r.status_code == 202, (i, r.text)
        # One key, in the metadata store; no key file beside it.
        assert len(stored_token_key(srv.root) or b'') == 32
        assert not list(srv.root.glob('.token-key*'))
    finally:
        srv.stop()


def test_htpasswd_edits_apply_without_a_restart(tmp_path: Path,
                                                files: dict[str, Path]) -> None:
    srv = AuthServer(tmp_path / 'data', '--auth', 'basic', '--htpasswd',
                     str(files['htpasswd']))
    try:
        carol = ('carol', 'carol-new-password')
        with srv.client(*carol) as c:
            assert c.get('/v2/').status_code == 401
        htpasswd = files['htpasswd']
        lines = htpasswd.read_text().splitlines()
        lines = [line for line in lines if not line.startswith('bob:')]
        lines.append(htpasswd_entry(*carol))
        htpasswd.write_text('\n'.join(lines) + '\n')
        stat = htpasswd.stat()  # a new mtime even on a coarse clock
        os.utime(htpasswd, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
        with srv.client(*carol) as c:
            assert c.get('/v2/').status_code == 200
        with srv.client('bob', USERS['bob']) as c:
            assert c.get('/v2/').status_code == 401
    finally:
        srv.stop()


# ----------------------------------------------------------- the fixture ----
USER_TESTS = r'''
import base64
import os
import urllib.error
import urllib.request

import pytest

HTPASSWD = {htpasswd!r}


def call(method, url, headers=None):
    req = urllib.request.Request(url, method=method, headers=headers or {{}})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def basic(user, password):
    raw = base64.b64encode(f'{{user}}:{{password}}'.encode()).decode()
    return {{'Authorization': 'Basic ' + raw}}


@pytest.mark.oci_registry(auth='basic', htpasswd=HTPASSWD)
def test_basic_auth_registry(oci_registry):
    status, headers, _ = call('GET', f'{{oci_registry.url}}/v2/')
    assert status == 401
    assert headers['WWW-Authenticate'].startswith('Basic ')
    status, _, _ = call('GET', f'{{oci_registry.url}}/v2/', basic('dev', 'dev-pw'))
    assert status == 200
    status, _, _ = call('POST', f'{{oci_registry.url}}/v2/demo/app/blobs/uploads/',
                        basic('dev', 'dev-pw'))
    assert status == 202
    with open(os.environ['PIDS'], 'a') as f:
        f.write(f'{{oci_registry.process.pid}}\n')


@pytest.mark.oci_registry(auth='token', htpasswd=HTPASSWD, anonymous_read=True)
def test_token_auth_registry(oci_registry):
    status, headers, _ = call('GET', f'{{oci_registry.url}}/v2/')
    assert status == 401
    assert headers['WWW-Authenticate'].startswith('Bearer realm=')
    with open(os.environ['PIDS'], 'a') as f:
        f.write(f'{{oci_registry.process.pid}}\n')
'''


def test_oci_registry_fixture_starts_an_authenticated_registry(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """``@pytest.mark.oci_registry(auth='basic', htpasswd=...)`` (and token) start an
    authenticated registry for a user's test, and stop it again."""
    htpasswd = write_htpasswd(pytester.path / 'htpasswd', {'dev': 'dev-pw'})
    pytester.makepyfile(test_user=USER_TESTS.format(htpasswd=str(htpasswd)))
    # Bounded failure: a registry that is never seen ready gives up within 5 x 6 s
    # instead of 5 x 20 s, and -x stops at the first.
    pytester.makeconftest('import oci_ref.testing\noci_ref.testing.READY_TIMEOUT = 6\n')
    pids = pytester.path / 'pids.txt'
    monkeypatch.setenv('PIDS', str(pids))
    result = pytester.runpytest_subprocess('-q', '-x', '-p', 'no:cacheprovider')
    result.assert_outcomes(passed=2)
    started = [int(line) for line in pids.read_text().split()]
    assert len(started) == 2
    for pid in started:
        assert not os.path.exists(f'/proc/{pid}'), f'registry {pid} still running'
