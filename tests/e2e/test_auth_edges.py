"""Access control's edges on a real `oci-ref serve`, where the wire or the process
matters: the token endpoint's body bound on a socket, the Host header, a bad
htpasswd edit under a running server, and what `serve` refuses to start with.
(In-process cases: tests/api/test_auth_edges.py.)"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import jwt
import pytest

from oci_ref.api.access import TOKEN_FORM_MAX
from oci_ref.auth import KEY_FILE
from oci_ref.testing import free_port
from tests.e2e._helpers import parse_head, raw, read_to_eof, read_until
from tests.interop.auth import AuthServer, basic_header, htpasswd_entry, write_htpasswd
from tests.support import rss_kib, stored_token_key

pytestmark = pytest.mark.e2e

USERS = {'alice': 'alice-pw-Edge-1', 'bob': 'bob-pw-Edge-2'}


@pytest.fixture
def htpasswd(tmp_path: Path) -> Path:
    return write_htpasswd(tmp_path / 'htpasswd', USERS)


@pytest.fixture
def token_server(tmp_path: Path, htpasswd: Path):  # type: ignore[no-untyped-def]
    srv = AuthServer(tmp_path / 'data', '--auth', 'token', '--htpasswd', str(htpasswd))
    yield srv
    srv.stop()


def serve(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`oci-ref serve` expected to refuse: it must exit by itself, quickly."""
    return subprocess.run(
        [sys.executable, '-m', 'oci_ref', 'serve', '--listen', f'127.0.0.1:{free_port()}',
         '--root', str(root), *args], capture_output=True, text=True, timeout=60)


# ------------------------------------------------------------- start-up ----
@pytest.mark.parametrize('size', [0, 5, 31])
def test_serve_refuses_a_short_signing_key(tmp_path: Path, htpasswd: Path,
                                           size: int) -> None:
    """An empty or short key (left by a crash in the old lazy creation) is never
    used: the server does not start, and says what to do."""
    root = tmp_path / 'data'
    root.mkdir()
    (root / KEY_FILE).write_bytes(os.urandom(size))
    done = serve(root, '--auth', 'token', '--htpasswd', str(htpasswd), '--workers', '2')
    assert done.returncode == 2, done.stderr[-2000:]
    assert f'{size} bytes' in done.stderr and 'remove the file' in done.stderr
    assert (root / KEY_FILE).stat().st_size == size


def test_serve_makes_the_key_before_the_workers_start(tmp_path: Path,
                                                      htpasswd: Path) -> None:
    """With 4 workers there is exactly one key, whole, in the metadata store (no key
    file), and every worker's tokens are accepted by the others."""
    srv = AuthServer(tmp_path / 'data', '--auth', 'token', '--htpasswd', str(htpasswd),
                     '--workers', '4')
    try:
        key = stored_token_key(srv.root)
        assert key is not None and len(key) == 32
        assert not list(srv.root.glob(f'{KEY_FILE}*'))
        for _ in range(12):  # fresh connections: spread over the workers
            with httpx.Client(base_url=srv.url, timeout=30) as c:
                r = c.get('/token', params={'service': 'oci-ref'},
                          headers={'Authorization': basic_header('alice',
                                                                 USERS['alice'])})
                assert r.status_code == 200, r.text
                token = r.json()['token']
            with httpx.Client(base_url=srv.url, timeout=30) as c:
                assert c.get('/v2/', headers={
                    'Authorization': f'Bearer {token}'}).status_code == 200
        assert key.hex() not in srv.log.read_text(errors='replace')
    finally:
        srv.stop()


def test_an_upgraded_registry_keeps_its_key_file_s_tokens_valid(
        tmp_path: Path, htpasswd: Path) -> None:
    """A registry from before the key moved into the metadata store has
    <root>/.token-key: serve imports it (tokens signed with it stay valid), and
    renames the file so a key later deleted from the store to rotate it does not
    come back from it."""
    root = tmp_path / 'data'
    root.mkdir()
    old = os.urandom(32)
    (root / KEY_FILE).write_bytes(old)
    now = int(time.time())
    forged = jwt.encode({'iss': 'oci-ref', 'sub': 'alice', 'aud': 'oci-ref', 'iat': now,
                         'nbf': now - 1, 'exp': now + 300, 'access': [],
                         'typ': 'access'}, old, algorithm='HS256')
    for _ in range(2):  # the upgrade, then a plain restart
        srv = AuthServer(root, '--auth', 'token', '--htpasswd', str(htpasswd))
        try:
            assert stored_token_key(root) == old
            with httpx.Client(base_url=srv.url, timeout=30) as c:
                assert c.get('/v2/', headers={
                    'Authorization': f'Bearer {forged}'}).status_code == 200
            assert old.hex() not in srv.log.read_text(errors='replace')
        finally:
            srv.stop()
        assert not (root / KEY_FILE).exists()
        assert (root / f'{KEY_FILE}.imported').read_bytes() == old


def test_serve_refuses_a_malformed_htpasswd_naming_the_line(tmp_path: Path,
                                                            htpasswd: Path) -> None:
    htpasswd.write_text(htpasswd.read_text() + 'carol:plain-Secret-pw-31\n')
    done = serve(tmp_path / 'data', '--auth', 'basic', '--htpasswd', str(htpasswd))
    assert done.returncode == 2, done.stderr[-2000:]
    assert 'line 3' in done.stderr
    assert 'plain-Secret-pw-31' not in done.stderr + done.stdout


# ------------------------------------------------------- the token endpoint ----
def test_a_declared_gigabyte_is_413_at_once_and_costs_no_memory(
        token_server: AuthServer) -> None:
    """A POST /token declaring 1 GiB and sending a few bytes is answered 413 right
    away (the client is still "sending"), and the server's memory does not grow."""
    srv = token_server
    before = rss_kib(srv.proc.pid)
    with socket.create_connection(('127.0.0.1', srv.port), timeout=10) as s:
        s.sendall(b'POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\n'
                  b'Content-Type: application/x-www-form-urlencoded\r\n'
                  b'Content-Length: 1073741824\r\n\r\ngrant_type=pass')
        buf = bytearray()
        status, _, headers = parse_head(read_until(s, buf, b'\r\n\r\n'))
    assert status == 413, headers
    assert rss_kib(srv.proc.pid) - before < 16 * 1024


def test_a_streamed_token_form_is_cut_at_the_bound(token_server: AuthServer) -> None:
    """Chunked (no length declared): the server stops reading just past the bound
    and answers 413, while the client is still sending."""
    srv = token_server
    sent = 0
    total = 1024 * TOKEN_FORM_MAX
    with socket.create_connection(('127.0.0.1', srv.port), timeout=30) as s:
        s.sendall(b'POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\n'
                  b'Content-Type: application/x-www-form-urlencoded\r\n'
                  b'Transfer-Encoding: chunked\r\n\r\n')
        answer: dict[str, object] = {}

        def read() -> None:
            buf = bytearray()
            try:
                answer['head'] = parse_head(read_until(s, buf, b'\r\n\r\n'))
                answer['body'] = read_to_eof(s, buf)
            except OSError as ex:
                answer['error'] = ex

        reader = threading.Thread(target=read)
        reader.start()
        piece = b'scope=' + b'x' * 8186
        frame = b'%x\r\n%s\r\n' % (len(piece), piece)
        try:
            while sent < total and 'head' not in answer:
                s.sendall(frame)
                sent += len(piece)
        except OSError:
            pass  # the server closed the connection after answering
        reader.join(30)
    assert 'head' in answer, answer
    status, _, headers = answer['head']  # type: ignore[misc]
    assert status == 413, headers
    assert sent < total, 'the whole body was accepted before any answer'


def test_the_token_endpoint_without_token_auth_is_404_without_reading(
        tmp_path: Path, htpasswd: Path) -> None:
    srv = AuthServer(tmp_path / 'data', '--auth', 'basic', '--htpasswd', str(htpasswd))
    try:
        with socket.create_connection(('127.0.0.1', srv.port), timeout=10) as s:
            s.sendall(b'POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\n'
                      b'Content-Length: 1073741824\r\n\r\nabc')
            status, _, _ = parse_head(read_until(s, bytearray(), b'\r\n\r\n'))
        assert status == 404
    finally:
        srv.stop()


# ------------------------------------------------------------------- Host ----
def test_a_host_header_cannot_inject_challenge_parameters(
        token_server: AuthServer) -> None:
    srv = token_server
    r = raw(srv.port, 'GET', '/v2/', headers={'Host': 'evil.example",service="evil'})
    # request_bytes always sends a Host of its own: this is the second, and the
    # malformed one; each alone is refused as well (tests/api/test_auth_edges.py).
    assert r.status == 400
    assert r.header('www-authenticate') is None
    with socket.create_connection(('127.0.0.1', srv.port), timeout=10) as s:
        s.sendall(b'GET /v2/ HTTP/1.1\r\nHost: evil.example",service="evil\r\n'
                  b'Connection: close\r\n\r\n')
        buf = bytearray()
        status, _, headers = parse_head(read_until(s, buf, b'\r\n\r\n'))
    assert status == 400
    assert not [v for k, v in headers if k == 'www-authenticate']
    r = raw(srv.port, 'GET', '/v2/')
    assert r.status == 401
    assert r.header('www-authenticate') == (
        f'Bearer realm="http://127.0.0.1:{srv.port}/token",service="oci-ref"')


# ------------------------------------------------- htpasswd edits at run time ----
def test_a_malformed_htpasswd_edit_keeps_the_server_serving(tmp_path: Path,
                                                            htpasswd: Path) -> None:
    """Before: every authenticated request answered 500 after such an edit. Now the
    last good file serves, the line number is logged once, /readyz says why."""
    srv = AuthServer(tmp_path / 'data', '--auth', 'basic', '--htpasswd', str(htpasswd))
    try:
        good = htpasswd.read_text()
        htpasswd.write_text(good + 'carol:carol-Plaintext-Secret\n'
                            + htpasswd_entry('dave', 'dave-pw') + '\n')
        with srv.client() as c:
            for _ in range(5):
                r = c.get('/v2/', headers={
                    'Authorization': basic_header('alice', USERS['alice'])})
                assert r.status_code == 200, r.content
                r = c.get('/v2/', headers={'Authorization': basic_header('dave',
                                                                          'dave-pw')})
                assert r.status_code == 401
            r = c.get('/readyz')
            assert r.status_code == 503
            assert 'line 3' in r.json()['errors'][0]['detail']['users']
            htpasswd.write_text(good + htpasswd_entry('dave', 'dave-pw') + '\n')
            r = c.get('/v2/', headers={'Authorization': basic_header('dave', 'dave-pw')})
            assert r.status_code == 200
            assert c.get('/readyz').status_code == 200
    finally:
        srv.stop()
    log = srv.log.read_text()
    assert log.count('line 3') == 1, log[-3000:]
    assert 'carol-Plaintext-Secret' not in log
