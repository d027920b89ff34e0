"""``oci_ref.protocol``: a TLS handshake on a plain-HTTP port is logged as one clear
line, against a real `oci-ref serve` and a real TLS client (the ssl module)."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support import Server

pytestmark = pytest.mark.e2e

UVICORN_LINE = 'Invalid HTTP request received'


@pytest.fixture(scope='module', params=[1, 2], ids=['1-worker', '2-workers'])
def plain(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp('plain') / 'data', '--workers',
                 str(request.param))
    yield srv
    srv.stop()


def log_text(srv: Server, since: int = 0) -> str:
    with open(srv.log, 'rb') as f:
        f.seek(since)
        return f.read().decode(errors='replace')


def log_lines(srv: Server, needle: str, *, since: int = 0, count: int = 1,
              timeout: float = 10.0) -> list[str]:
    """The server log's lines holding ``needle`` (from byte ``since`` on), once
    there are ``count``: the client may have its answer before the line is in the
    file."""
    deadline = time.monotonic() + timeout
    while True:
        found = [line for line in log_text(srv, since).splitlines() if needle in line]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def tls_attempt(port: int) -> str:
    """A real TLS handshake against ``port``; returns the client's address."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(('127.0.0.1', port), timeout=10) as raw:
        client = '{}:{}'.format(*raw.getsockname())
        with pytest.raises(ssl.SSLError):
            context.wrap_socket(raw, server_hostname='127.0.0.1')
    return client


def test_a_tls_handshake_on_a_plain_port_is_logged_as_one_clear_line(plain):
    since = plain.log.stat().st_size
    client = tls_attempt(plain.port)
    lines = log_lines(plain, f'{client} tried TLS (HTTPS) on plain-HTTP {plain.host}',
                      since=since)
    assert len(lines) == 1, log_text(plain, since)
    assert '--tls-verify=false' in lines[0] and '--tls-cert' in lines[0]
    assert UVICORN_LINE not in log_text(plain, since)
    # The port keeps serving HTTP.
    assert httpx.get(plain.url + '/v2/').status_code == 200


def test_the_tls_client_gets_a_plain_http_answer(plain):
    """What Go clients turn into "server gave HTTP response to HTTPS client"."""
    with socket.create_connection(('127.0.0.1', plain.port), timeout=10) as s:
        # The first bytes of a ClientHello (a handshake record, TLS 1.0 framing).
        s.sendall(b'\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03' + b'\0' * 32)
        answer = b''
        while chunk := s.recv(4096):
            answer += chunk
    assert answer.startswith(b'HTTP/1.1 400 '), answer
    assert answer.endswith(b'This port speaks plain HTTP, not TLS.')


def test_other_garbage_is_still_uvicorns_invalid_request(plain):
    since = plain.log.stat().st_size
    with socket.create_connection(('127.0.0.1', plain.port), timeout=10) as s:
        client = '{}:{}'.format(*s.getsockname())
        s.sendall(b'\x01\x02 not http\r\n\r\n')
        answer = b''
        while chunk := s.recv(4096):
            answer += chunk
    assert answer.startswith(b'HTTP/1.1 400 '), answer
    assert log_lines(plain, UVICORN_LINE, since=since)
    assert not log_lines(plain, f'{client} tried TLS', since=since, timeout=0)
