"""Upstream registries for the pull-through cache's tests, started by the tests.

- ``token_upstream``: a second `oci-ref serve` with Docker token auth (htpasswd users,
  access rules), its access log on so that token requests can be counted there.
- ``DistributionUpstream``: CNCF distribution (Debian's ``docker-registry``) with
  htpasswd (Basic) auth, or with token auth whose realm is wherever the test says.
- ``Stub``: a tiny loopback HTTP server for the faults no real registry can be made
  to produce here (429 with Retry-After, wrong bytes, a body cut off, 5xx, a redirect
  to another host); each test that uses it says so.
"""

from __future__ import annotations

import asyncio
import http.server
import os
import re
import shutil
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from oci_ref.testing import Process, free_port, http_ready
from oci_ref.upstream.client import UpstreamClient
from oci_ref.upstream.config import Upstream, parse_upstreams
from tests.interop.auth import (
    AuthServer,
    RegistryAuth,
    make_ca_and_server_cert,
    write_htpasswd,
)
from tests.support import Server

IN_CI = os.environ.get('CI') == 'true'
USERS = {'mirror': 'mirror-pw-Upstream-5521', 'pusher': 'pusher-pw-Upstream-1934'}
ACCESS = '''
[[rule]]
repository = "*"
principals = ["pusher"]
actions = ["pull", "push", "delete"]

[[rule]]
repository = "mirrored/*"
principals = ["mirror"]
actions = ["pull"]
'''
T = TypeVar('T')


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def upstream(name: str, url: str, **table: Any) -> Upstream:
    (u,) = parse_upstreams([{'name': name, 'url': url, **table}])
    return u


def client(u: Upstream, **environ: str) -> UpstreamClient:
    """A client that sees only ``environ`` (never the test process's own)."""
    return UpstreamClient(u, environ=environ)


# ------------------------------------------------------------- oci-ref ----
def token_upstream(base: Path, *extra: str) -> AuthServer:
    """`oci-ref serve --auth token` with USERS and ACCESS, access log on."""
    base.mkdir(parents=True, exist_ok=True)
    htpasswd = write_htpasswd(base / 'htpasswd', USERS)
    access = base / 'access.toml'
    access.write_text(ACCESS)
    return AuthServer(base / 'data', '--auth', 'token', '--htpasswd', str(htpasswd),
                      '--access', str(access), '--access-log', '--login-failures',
                      '1000', *extra)


def token_requests(server: Server) -> list[str]:
    """The /token requests in the upstream's access log (method and query)."""
    text = server.log.read_text(errors='replace')
    return re.findall(r'"((?:GET|POST) /token[^ ]*) HTTP', text)


def pusher(server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=60,
                        auth=RegistryAuth('pusher', USERS['pusher']))


# -------------------------------------------------------- distribution ----
def docker_registry() -> str:
    path = shutil.which('docker-registry', path=os.pathsep.join(
        ['/usr/bin', '/usr/sbin', os.environ.get('PATH', '')]))
    if path is None:
        message = 'docker-registry is not installed (make clients)'
        if IN_CI:
            pytest.fail(message + ' - CI must have it', pytrace=False)
        pytest.skip(message)
    assert path is not None
    return path


class DistributionUpstream:
    """CNCF distribution on a free loopback port: ``auth='htpasswd'`` with USERS, or
    ``auth='token'`` trusting a throwaway CA with its realm at ``realm``."""

    def __init__(self, base: Path, auth: str = 'htpasswd', realm: str = ''):
        exe = docker_registry()
        base.mkdir(parents=True, exist_ok=True)
        self.root = base / 'storage'
        self.port = free_port()
        self.url = f'http://127.0.0.1:{self.port}'
        self.log = base / f'distribution-{self.port}.log'
        if auth == 'htpasswd':
            htpasswd = write_htpasswd(base / 'htpasswd', USERS)
            auth_yaml = f'  htpasswd:\n    realm: upstream-test\n    path: {htpasswd}\n'
        else:
            ca = make_ca_and_server_cert(base / 'tls')['ca']
            auth_yaml = (f'  token:\n    realm: {realm}\n    service: upstream-test\n'
                         f'    issuer: upstream-test\n    rootcertbundle: {ca}\n')
        config = base / 'config.yml'
        config.write_text(
            'version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n'
            f'    rootdirectory: {self.root}\n  delete:\n    enabled: true\n'
            f'http:\n  addr: 127.0.0.1:{self.port}\nauth:\n{auth_yaml}')
        self.proc = Process.spawn([exe, 'serve', str(config)], log=self.log,
                                  name='docker-registry')
        # distribution answers / with 200 whatever the auth.
        self.proc.wait_ready(http_ready(self.url + '/'))

    def stop(self) -> int:
        return self.proc.stop()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)


# ----------------------------------------------------------------- stub ----
Handler = Callable[[http.server.BaseHTTPRequestHandler], None]


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up on a fault is what the fault tests do


class Stub:
    """A loopback HTTP/1.1 server whose answers are per-path functions. Records every
    request as (method, path, headers). ``release`` unblocks handlers that wait."""

    def __init__(self, host: str = '127.0.0.1'):
        self.routes: dict[str, Handler] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.release = threading.Event()
        stub = self

        class _Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def _any(self) -> None:
                stub.requests.append((self.command, self.path, dict(self.headers)))
                path = self.path.split('?')[0]
                handler = stub.routes.get(path) or stub.routes.get('*')
                if handler is None:
                    self.send_response(404)
                    self.send_header('Content-Length', '0')
                    self.end_headers()
                    return
                handler(self)

            do_GET = do_HEAD = do_POST = _any

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _Server((host, 0), _Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f'http://{host}:{self.port}'
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def hold(self, path: str, data: bytes, at: int, *, wait: float = 60,
             finish: bool = True) -> threading.Event:
        """Answer GET ``path`` with ``data`` (its full Content-Length) in two parts:
        the first ``at`` bytes, then, once ``release`` is set (or ``wait`` seconds
        passed), the rest, unless ``finish`` is off (a cut-off or a kill test).
        Returns the event set once the first part is on the wire."""
        sent = threading.Event()

        def held(h: http.server.BaseHTTPRequestHandler) -> None:
            h.send_response(200)
            h.send_header('Content-Length', str(len(data)))
            h.end_headers()
            h.wfile.write(data[:at])
            h.wfile.flush()
            sent.set()
            self.release.wait(wait)
            if finish:
                h.wfile.write(data[at:])

        self.routes[path] = held
        return sent

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def answer(status: int, body: bytes = b'', **headers: str) -> Handler:
    def handle(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k.replace('_', '-'), v)
        h.send_header('Content-Length', str(len(body)))
        h.end_headers()
        if h.command != 'HEAD':
            h.wfile.write(body)
    return handle


def cut_off(body: bytes, announced: int) -> Handler:
    """Announce ``announced`` bytes, send ``body`` (fewer), close the connection."""
    def handle(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header('Content-Length', str(announced))
        h.end_headers()
        h.wfile.write(body)
        h.wfile.flush()
        h.close_connection = True
    return handle
