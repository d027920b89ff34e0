"""Access control in tests: htpasswd files (bcrypt entries written with the
``bcrypt`` package, in the ``$2y$`` form ``htpasswd -B`` writes; the real
``htpasswd`` binary for the test that reads its output), servers started with auth
(and TLS) on, a self-signed CA made with ``openssl``, and
an httpx auth that answers Basic and Bearer (Docker token) challenges as registry
clients do.

Used by tests/api/test_access_matrix.py, tests/e2e/test_auth.py, tests/e2e/test_tls.py
and tests/interop/test_auth_clients.py.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import ssl
import subprocess
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest

from tests.support import Server

IN_CI = os.environ.get('CI') == 'true'


def require_tool(name: str) -> str:
    """Path of ``name`` (htpasswd, openssl): skip locally, fail under CI=true."""
    path = shutil.which(name, path=os.pathsep.join(['/usr/bin', '/usr/sbin',
                                                    os.environ.get('PATH', '')]))
    if path is None:
        message = f'{name} is not installed (htpasswd: apache2-utils; openssl: openssl)'
        if IN_CI:
            pytest.fail(message + ' - CI must have it', pytrace=False)
        pytest.skip(message)
    assert path is not None
    return path


# What `htpasswd -B` uses when not given -C.
HTPASSWD_B_COST = 5


def htpasswd_entry(user: str, password: str, cost: int | None = None) -> str:
    """One ``user:$2y$<cost>$…`` line like ``htpasswd -Bbn`` writes, made with the
    bcrypt package (no binary needed)."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost or HTPASSWD_B_COST))
    return f'{user}:$2y${hashed.decode()[4:]}'


def htpasswd_b_entry(user: str, password: str, cost: int | None = None) -> str:
    """One line written by the real ``htpasswd -Bbn`` (apache2-utils)."""
    args = [require_tool('htpasswd'), '-Bbn']
    if cost is not None:
        args += ['-C', str(cost)]
    done = subprocess.run([*args, user, password], capture_output=True, text=True,
                          timeout=60, check=True)
    line = done.stdout.strip()
    assert re.fullmatch(rf'{re.escape(user)}:\$2y\$\d\d\$[./A-Za-z0-9]{{53}}', line), line
    return line


def write_htpasswd(path: Path, users: Mapping[str, str], cost: int | None = None,
                   *, binary: bool = False) -> Path:
    """An htpasswd file; ``binary``: written by the real ``htpasswd -B``."""
    entry = htpasswd_b_entry if binary else htpasswd_entry
    path.write_text(''.join(entry(u, p, cost) + '\n' for u, p in users.items()))
    return path


def basic_header(user: str, password: str) -> str:
    return 'Basic ' + base64.b64encode(f'{user}:{password}'.encode()).decode()


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="…",service="…"`` -> ('bearer', {realm: …, service: …})."""
    scheme, _, rest = header.strip().partition(' ')
    return scheme.lower(), dict(re.findall(r'(\w+)="([^"]*)"', rest))


def ca_context(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


class AuthServer(Server):
    """`tests.support.Server` for a registry with auth and/or TLS on: with
    ``--tls-cert/--tls-key`` among the arguments it speaks HTTPS (``url`` is
    ``https://…``) and ``ca`` is the CA its clients trust."""

    def __init__(self, root: Path, *args: str, ca: Path | None = None,
                 env: dict[str, str] | None = None):
        self.ca = ca
        root.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(root, *args, env=env)

    def client(self, user: str | None = None, password: str | None = None
               ) -> httpx.Client:
        verify: Any = ca_context(self.ca) if self.ca is not None else True
        return httpx.Client(base_url=self.url, timeout=60, verify=verify,
                            auth=RegistryAuth(user, password))


class RegistryAuth(httpx.Auth):
    """Answers a registry's 401 the way clients do: Basic -> resend with the
    credentials; Bearer -> fetch a token from the realm for the challenged scope
    (with the credentials, or anonymously) and resend with it."""

    requires_response_body = True

    def __init__(self, user: str | None = None, password: str | None = None):
        self.user = user
        self.password = password
        self.tokens: list[str] = []  # every token received (for log checks)

    def auth_flow(self, request: httpx.Request
                  ) -> Generator[httpx.Request, httpx.Response, None]:
        response = yield request
        if response.status_code != 401:
            return
        scheme, params = parse_challenge(response.headers.get('www-authenticate', ''))
        if scheme == 'basic' and self.user is not None:
            request.headers['Authorization'] = basic_header(self.user, self.password or '')
            yield request
        elif scheme == 'bearer':
            query = [('service', params.get('service', ''))]
            query += [('scope', s) for s in params.get('scope', '').split() if s]
            headers = {}
            if self.user is not None:
                headers['Authorization'] = basic_header(self.user, self.password or '')
            token_response = yield httpx.Request('GET', params['realm'], params=query,
                                                 headers=headers)
            if token_response.status_code != 200:
                return
            token = token_response.json()['token']
            self.tokens.append(token)
            request.headers['Authorization'] = f'Bearer {token}'
            yield request


# ------------------------------------------------------------ TLS material ----
def make_ca_and_server_cert(directory: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 (SAN IP:127.0.0.1)
    that it signed, made with openssl now. Returns paths: ca, ca_key, cert, key."""
    openssl = require_tool('openssl')
    directory.mkdir(parents=True, exist_ok=True)
    paths = {'ca': directory / 'ca.crt', 'ca_key': directory / 'ca.key',
             'cert': directory / 'server.crt', 'key': directory / 'server.key',
             'csr': directory / 'server.csr', 'ext': directory / 'server.ext'}

    def run(*args: str) -> None:
        done = subprocess.run([openssl, *args], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, (args, done.stderr)

    ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
    run('req', '-x509', *ec, '-keyout', str(paths['ca_key']), '-out', str(paths['ca']),
        '-days', '2', '-subj', '/CN=oci-ref test CA',
        '-addext', 'basicConstraints=critical,CA:TRUE',
        '-addext', 'keyUsage=critical,keyCertSign,cRLSign')
    run('req', *ec, '-keyout', str(paths['key']), '-out', str(paths['csr']),
        '-subj', '/CN=127.0.0.1')
    paths['ext'].write_text('basicConstraints=CA:FALSE\n'
                            'keyUsage=critical,digitalSignature,keyEncipherment\n'
                            'extendedKeyUsage=serverAuth\n'
                            'subjectAltName=IP:127.0.0.1\n')
    run('x509', '-req', '-in', str(paths['csr']), '-CA', str(paths['ca']),
        '-CAkey', str(paths['ca_key']), '-CAcreateserial', '-out', str(paths['cert']),
        '-days', '2', '-extfile', str(paths['ext']))
    return paths


# ------------------------------------------------------ interop registries ----
# Users of the authenticated interop registries: `pusher` may pull, push and delete
# under interop/, `puller` may only pull there.
INTEROP_USERS = {'pusher': 'pusher-pw-Interop-2291', 'puller': 'puller-pw-Interop-7730'}
INTEROP_ACCESS = '''
[[rule]]
repository = "interop/*"
principals = ["pusher"]
actions = ["pull", "push", "delete"]

[[rule]]
repository = "interop/*"
principals = ["puller"]
actions = ["pull"]

[catalog]
principals = ["pusher", "puller"]
'''


def start_auth_registries(base: Path, *extra: str) -> dict[str, AuthServer]:
    """Two oci-ref servers with INTEROP_USERS and INTEROP_ACCESS: 'basic' (HTTP
    basic auth) and 'token' (Docker token auth). Stop them with ``.stop()``.

    Every client tries a wrong password from the same address (127.0.0.1), and some
    retry: the failed-login limit is raised so that one client's attempts do not
    lock the next one out (tests/api/test_access_matrix.py tests the limit)."""
    base.mkdir(parents=True, exist_ok=True)
    htpasswd = write_htpasswd(base / 'htpasswd', INTEROP_USERS)
    access = base / 'access.toml'
    access.write_text(INTEROP_ACCESS)
    servers: dict[str, AuthServer] = {}
    try:
        for mode in ('basic', 'token'):
            servers[mode] = AuthServer(base / mode / 'data', '--auth', mode,
                                       '--htpasswd', str(htpasswd),
                                       '--access', str(access),
                                       '--login-failures', '1000', *extra)
    except BaseException:
        for srv in servers.values():
            srv.stop()
        raise
    return servers


def manifest_digest(server: AuthServer, repo: str, reference: str) -> str | None:
    """The digest ``repo:reference`` resolves to, asked as `pusher`; None if absent."""
    accept = ', '.join([
        'application/vnd.oci.image.manifest.v1+json',
        'application/vnd.oci.image.index.v1+json',
        'application/vnd.docker.distribution.manifest.v2+json',
        'application/vnd.docker.distribution.manifest.list.v2+json'])
    with server.client('pusher', INTEROP_USERS['pusher']) as c:
        r = c.head(f'/v2/{repo}/manifests/{reference}', headers={'Accept': accept})
    if r.status_code == 404:
        return None
    assert r.status_code == 200, (repo, reference, r.status_code)
    return str(r.headers['docker-content-digest'])
