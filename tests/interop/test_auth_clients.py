"""Real clients log in and push/pull through HTTP basic auth and through Docker token
auth (two oci-ref servers with `--auth basic` / `--auth token`, users made by the real
`htpasswd -B`): `pusher` pushes and pulls back; a wrong password fails; `puller`
(pull-only) is refused a push and nothing lands.

Against ``--registry=distribution`` these tests are skipped: the control peer runs
without auth.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.interop.auth import (
    INTEROP_USERS,
    AuthServer,
    manifest_digest,
    start_auth_registries,
)
from tests.interop.conftest import find_client, missing, storage_driver
from tests.interop.daemons import Containerd, Dockerd
from tests.interop.layout import write_docker_archive, write_image_layout
from tests.interop.util import ContainersTool, Mark, log_mark, log_since, run

pytestmark = pytest.mark.interop

PUSHER, PULLER = 'pusher', 'puller'
PW = INTEROP_USERS
WRONG = 'not-the-pusher-password'
MODES = pytest.mark.parametrize('mode', ['basic', 'token'])


@pytest.fixture(scope='module')
def auth_registries(request: pytest.FixtureRequest,
                    tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[dict[str, AuthServer]]:
    if request.config.getoption('--registry') != 'oci-ref':
        pytest.skip('the control peer (distribution) runs without auth')
    servers = start_auth_registries(
        tmp_path_factory.mktemp('interop-auth'),
        *shlex.split(request.config.getoption('--oci-ref-args')))
    yield servers
    for srv in servers.values():
        srv.stop()


@pytest.fixture
def server(auth_registries: dict[str, AuthServer], mode: str) -> AuthServer:
    return auth_registries[mode]


def used_auth(server: AuthServer, mode: str, mark: Mark) -> str:
    """The server log since ``mark`` shows the client going through ``mode``'s
    flow: a challenge, then (token) a token fetched and used."""
    log = log_since(server, mark)
    assert re.search(r'" 401 ', log), f'no challenge in:\n{log[-3000:]}'
    if mode == 'token':
        assert re.search(r'"(GET|POST) /token\S* HTTP/1\.1" 200', log), log[-3000:]
    return log


def refused_push(server: AuthServer, mode: str, mark: Mark, repo: str, tag: str) -> None:
    """A pull-only user's push was refused with the right status, and nothing
    landed."""
    log = log_since(server, mark)
    status = '403' if mode == 'basic' else '401'
    assert re.search(rf'"(POST|PUT|HEAD|PATCH) /v2/{re.escape(repo)}/\S* HTTP/1\.1" '
                     rf'{status} ', log), log[-3000:]
    assert not re.search(rf'"(POST|PUT|PATCH) /v2/{re.escape(repo)}/\S* HTTP/1\.1" '
                         r'20[12] ', log), log[-3000:]
    assert manifest_digest(server, repo, tag) is None


# ------------------------------------------------------------------ docker ----
@pytest.fixture(scope='module')
def dockerd(auth_registries: dict[str, AuthServer]) -> Iterator[Dockerd]:
    if os.geteuid() != 0:
        missing('dockerd needs root')
    # Both auth registries are plain HTTP on loopback: mark all of 127/8 insecure.
    d = Dockerd(find_client('dockerd'), find_client('docker'), '127.0.0.0/8')
    yield d
    d.stop()


@pytest.mark.docker
@MODES
def test_docker_login_push_pull(server: AuthServer, mode: str, dockerd: Dockerd,
                                repo: str, workdir: Path) -> None:
    """docker login (--password-stdin), push, pull; wrong password; pull-only user"""
    find_client('dockerd')
    config = workdir / 'docker-config'
    config.mkdir()
    docker = [find_client('docker'), '--config', str(config), '--host',
              f'unix://{dockerd.socket}']

    def call(*args: str, user_input: str | None = None, check: bool = True) -> str:
        done = run([*docker, *args], registry=server, timeout=300, input=user_input,
                   check=check)
        return done.stdout + done.stderr

    image_id = write_docker_archive(workdir / 'img.tar', f'interop/{repo}:loaded',
                                    seed=f'docker {mode} {repo}')
    call('load', '--input', str(workdir / 'img.tar'))
    dst = f'{server.host}/{repo}:v1'
    call('tag', f'interop/{repo}:loaded', dst)

    mark = log_mark(server)
    out = call('login', '--username', PUSHER, '--password-stdin', server.host,
               user_input=PW[PUSHER])
    assert 'Login Succeeded' in out, out
    saved = json.loads((config / 'config.json').read_text())
    assert server.host in saved['auths']
    out = call('push', dst)
    digest = re.search(r'digest: (sha256:[0-9a-f]{64})', out)
    assert digest, out
    assert manifest_digest(server, repo, 'v1') == digest[1]
    call('rmi', '--force', f'interop/{repo}:loaded', dst)
    call('pull', dst)
    [pulled] = json.loads(run([*docker, 'image', 'inspect', dst], registry=server).stdout)
    assert pulled['Id'] == image_id
    used_auth(server, mode, mark)

    out = call('login', '--username', PUSHER, '--password-stdin', server.host,
               user_input=WRONG, check=False)
    assert 'Login Succeeded' not in out
    assert re.search(r'unauthorized|401|incorrect username or password', out, re.I), out

    out = call('login', '--username', PULLER, '--password-stdin', server.host,
               user_input=PW[PULLER])
    assert 'Login Succeeded' in out, out
    call('tag', dst, f'{server.host}/{repo}:by-puller')
    mark = log_mark(server)
    out = call('push', f'{server.host}/{repo}:by-puller', check=False)
    assert re.search(r'denied|unauthorized|insufficient', out, re.I), out
    refused_push(server, mode, mark, repo, 'by-puller')
    call('pull', dst)  # a pull-only user pulls
    call('logout', server.host)
    call('rmi', '--force', dst, f'{server.host}/{repo}:by-puller')


# ------------------------------------------------------------------ podman ----
@pytest.mark.podman
@MODES
def test_podman_login_push_pull(server: AuthServer, mode: str, repo: str,
                                workdir: Path) -> None:
    """podman login (--tls-verify=false), push, pull; wrong password; pull-only user"""
    exe = find_client('podman')
    driver, error = storage_driver(exe)
    if driver is None:
        missing(f'podman cannot set up its storage here: {error}')
    assert driver is not None
    tool = ContainersTool(exe, server, Path(tempfile.mkdtemp(prefix='podman-')), driver)
    try:
        def login(user: str, password: str, check: bool = True) -> str:
            done = run([exe, *tool.flags, 'login', '--tls-verify=false', '--username',
                        user, '--password-stdin', server.host], registry=server,
                       env=tool.env, input=password, check=check)
            return done.stdout + done.stderr

        image_id = write_docker_archive(workdir / 'img.tar', f'interop/{repo}:loaded',
                                        seed=f'podman {mode} {repo}')
        tool('load', '--input', str(workdir / 'img.tar'))
        dst = f'{server.host}/{repo}:v1'
        tool('tag', f'interop/{repo}:loaded', dst)
        mark = log_mark(server)
        assert 'Login Succeeded' in login(PUSHER, PW[PUSHER])
        auths = json.loads((tool.base / 'auth.json').read_text())['auths']
        assert server.host in auths
        tool('push', '--tls-verify=false', '--digestfile', str(workdir / 'digest'), dst)
        digest = (workdir / 'digest').read_text().strip()
        assert manifest_digest(server, repo, 'v1') == digest
        tool('rmi', '--all', '--force')
        tool('pull', '--tls-verify=false', dst)
        [image] = json.loads(tool('image', 'inspect', dst))
        assert image['Digest'] == digest
        assert image['Id'] == image_id.split(':')[1]
        used_auth(server, mode, mark)

        out = login(PUSHER, WRONG, check=False)
        assert 'Login Succeeded' not in out
        assert re.search(r'unauthorized|401|invalid username/password', out, re.I), out

        assert 'Login Succeeded' in login(PULLER, PW[PULLER])
        tool('tag', dst, f'{server.host}/{repo}:by-puller')
        mark = log_mark(server)
        tool('push', '--tls-verify=false', f'{server.host}/{repo}:by-puller', check=False)
        refused_push(server, mode, mark, repo, 'by-puller')
        tool('rmi', '--all', '--force')
        tool('pull', '--tls-verify=false', dst)  # a pull-only user pulls
        tool('logout', server.host)
    finally:
        tool.cleanup()
        shutil.rmtree(tool.base, ignore_errors=True)


# ------------------------------------------------------------------ skopeo ----
@pytest.mark.skopeo
@MODES
def test_skopeo_creds_copy_in_and_out(server: AuthServer, mode: str, repo: str,
                                      workdir: Path) -> None:
    """copy with --dest-creds / --src-creds, inspect --creds; wrong password;
    pull-only user"""
    skopeo = find_client('skopeo')
    (workdir / 'auth.json').write_text('{"auths": {}}')
    env = {'REGISTRY_AUTH_FILE': str(workdir / 'auth.json'), 'HOME': str(workdir)}
    digest = write_image_layout(workdir / 'src', 'v1', seed=f'skopeo {mode} {repo}')
    ref = f'docker://{server.host}/{repo}'

    def call(*args: str, check: bool = True) -> str:
        done = run([skopeo, *args], registry=server, env=env, check=check)
        return done.stdout + done.stderr

    mark = log_mark(server)
    call('copy', '--dest-tls-verify=false', '--dest-creds', f'{PUSHER}:{PW[PUSHER]}',
         '--digestfile', str(workdir / 'digest'), f'oci:{workdir / "src"}:v1', f'{ref}:v1')
    assert (workdir / 'digest').read_text().strip() == digest
    assert manifest_digest(server, repo, 'v1') == digest
    raw = call('inspect', '--raw', '--tls-verify=false', '--creds',
               f'{PUSHER}:{PW[PUSHER]}', f'{ref}:v1')
    assert json.loads(raw)['config']
    call('copy', '--src-tls-verify=false', '--src-creds', f'{PUSHER}:{PW[PUSHER]}',
         f'{ref}:v1', f'oci:{workdir / "out"}:v1')
    out_index = json.loads((workdir / 'out' / 'index.json').read_text())
    assert out_index['manifests'][0]['digest'] == digest
    used_auth(server, mode, mark)

    out = call('inspect', '--raw', '--tls-verify=false', '--creds', f'{PUSHER}:{WRONG}',
               f'{ref}:v1', check=False)
    assert re.search(r'unauthorized|401|authentication required', out, re.I), out
    out = call('inspect', '--raw', '--tls-verify=false', f'{ref}:v1', check=False)
    assert re.search(r'unauthorized|401|authentication required', out, re.I), out

    mark = log_mark(server)
    out = call('copy', '--dest-tls-verify=false', '--dest-creds',
               f'{PULLER}:{PW[PULLER]}', f'oci:{workdir / "src"}:v1', f'{ref}:by-puller',
               check=False)
    assert re.search(r'denied|unauthorized|insufficient', out, re.I), out
    refused_push(server, mode, mark, repo, 'by-puller')
    call('inspect', '--raw', '--tls-verify=false', '--creds', f'{PULLER}:{PW[PULLER]}',
         f'{ref}:v1')


# ------------------------------------------------------------------- crane ----
@pytest.mark.crane
@MODES
def test_crane_auth_login_push_pull(server: AuthServer, mode: str, repo: str,
                                    workdir: Path) -> None:
    """crane auth login (DOCKER_CONFIG), push --insecure, pull; wrong password;
    pull-only user"""
    crane = find_client('crane')
    config = workdir / 'docker-config'
    config.mkdir()
    env = {'DOCKER_CONFIG': str(config), 'HOME': str(workdir)}

    def call(*args: str, user_input: str | None = None, check: bool = True) -> str:
        done = run([crane, *args], registry=server, env=env, input=user_input,
                   check=check)
        return done.stdout + done.stderr

    def login(user: str, password: str) -> None:
        call('auth', 'login', server.host, '-u', user, '--password-stdin',
             user_input=password)
        assert server.host in json.loads((config / 'config.json').read_text())['auths']

    image_id = write_docker_archive(workdir / 'img.tar', 'example/app:v1',
                                    seed=f'crane {mode} {repo}')
    ref = f'{server.host}/{repo}'
    mark = log_mark(server)
    login(PUSHER, PW[PUSHER])
    call('push', '--insecure', str(workdir / 'img.tar'), f'{ref}:v1')
    digest = call('digest', '--insecure', f'{ref}:v1').strip()
    assert manifest_digest(server, repo, 'v1') == digest
    call('pull', '--insecure', f'{ref}:v1', str(workdir / 'out.tar'))
    with tarfile.open(workdir / 'out.tar') as tar:
        saved = json.load(tar.extractfile('manifest.json'))  # type: ignore[arg-type]
    assert saved[0]['Config'].endswith(image_id.split(':')[1])
    used_auth(server, mode, mark)

    login(PUSHER, WRONG)  # crane stores credentials without checking them
    out = call('digest', '--insecure', f'{ref}:v1', check=False)
    assert re.search(r'UNAUTHORIZED|401', out), out

    login(PULLER, PW[PULLER])
    assert call('digest', '--insecure', f'{ref}:v1').strip() == digest
    mark = log_mark(server)
    out = call('copy', '--insecure', f'{ref}:v1', f'{ref}:by-puller', check=False)
    assert re.search(r'DENIED|UNAUTHORIZED|denied|unauthorized', out), out
    refused_push(server, mode, mark, repo, 'by-puller')
    call('auth', 'logout', server.host)


# -------------------------------------------------------------------- oras ----
@pytest.mark.oras
@MODES
def test_oras_login_push_pull(server: AuthServer, mode: str, repo: str,
                              workdir: Path) -> None:
    """oras login (--plain-http, --password-stdin), push, pull; wrong password;
    pull-only user"""
    oras = find_client('oras')
    registry_config = workdir / 'oras-auth.json'
    cfg = ['--registry-config', str(registry_config)]

    def call(*args: str, user_input: str | None = None, check: bool = True) -> str:
        done = run([oras, *args], registry=server, cwd=workdir, input=user_input,
                   check=check, env={'HOME': str(workdir)})
        return done.stdout + done.stderr

    (workdir / 'hello.txt').write_text(f'hello {mode} {repo}\n')
    ref = f'{server.host}/{repo}'
    mark = log_mark(server)
    out = call('login', '--plain-http', *cfg, '-u', PUSHER, '--password-stdin',
               server.host, user_input=PW[PUSHER])
    assert 'Login Succeeded' in out, out
    pushed = json.loads(run([oras, 'push', '--plain-http', *cfg, '--format', 'json',
                             f'{ref}:v1', 'hello.txt:text/plain'], registry=server,
                            cwd=workdir, env={'HOME': str(workdir)}).stdout)
    assert manifest_digest(server, repo, 'v1') == pushed['digest']
    call('pull', '--plain-http', *cfg, '-o', 'out', f'{ref}:v1')
    assert (workdir / 'out' / 'hello.txt').read_text() == f'hello {mode} {repo}\n'
    used_auth(server, mode, mark)

    out = call('login', '--plain-http', *cfg, '-u', PUSHER, '--password-stdin',
               server.host, user_input=WRONG, check=False)
    assert 'Login Succeeded' not in out
    assert re.search(r'unauthorized|401', out, re.I), out

    out = call('login', '--plain-http', *cfg, '-u', PULLER, '--password-stdin',
               server.host, user_input=PW[PULLER])
    assert 'Login Succeeded' in out, out
    mark = log_mark(server)
    out = call('push', '--plain-http', *cfg, f'{ref}:by-puller', 'hello.txt:text/plain',
               check=False)
    assert re.search(r'denied|unauthorized|insufficient|403|401', out, re.I), out
    refused_push(server, mode, mark, repo, 'by-puller')
    call('pull', '--plain-http', *cfg, '-o', 'out2', f'{ref}:v1')
    call('logout', *cfg, server.host)


# --------------------------------------------------------------- containerd ----
@pytest.fixture(scope='module')
def containerd(auth_registries: dict[str, AuthServer]) -> Iterator[Containerd]:
    if os.geteuid() != 0:
        missing('containerd needs root')
    d = Containerd(find_client('containerd'), find_client('ctr'))
    yield d
    d.stop()


@pytest.mark.containerd
@MODES
def test_ctr_user_push_pull(server: AuthServer, mode: str, containerd: Containerd,
                            repo: str, workdir: Path) -> None:
    """ctr images push/pull --user user:password --plain-http; wrong password;
    pull-only user"""
    find_client('containerd')
    find_client('ctr')

    def ctr(*args: str, check: bool = True) -> str:
        done = run([*containerd.ctr_cmd, *args], registry=server, check=check)
        return done.stdout + done.stderr

    image_id = write_docker_archive(workdir / 'img.tar', f'interop/{repo}:loaded',
                                    seed=f'ctr {mode} {repo}')
    ctr('images', 'import', '--snapshotter', 'native', '--no-unpack',
        str(workdir / 'img.tar'))
    local = f'docker.io/interop/{repo}:loaded'
    dst = f'{server.host}/{repo}:v1'
    ctr('images', 'tag', local, dst)
    mark = log_mark(server)
    ctr('images', 'push', '--plain-http', '--user', f'{PUSHER}:{PW[PUSHER]}', dst)
    digest = manifest_digest(server, repo, 'v1')
    assert digest is not None
    ctr('images', 'rm', '--sync', local, dst)
    ctr('images', 'pull', '--plain-http', '--snapshotter', 'native', '--user',
        f'{PUSHER}:{PW[PUSHER]}', dst)
    assert digest in ctr('images', 'ls')
    assert image_id in ctr('content', 'ls', '--quiet').split()
    used_auth(server, mode, mark)
    ctr('images', 'rm', '--sync', dst)

    out = ctr('images', 'pull', '--plain-http', '--snapshotter', 'native', '--user',
              f'{PUSHER}:{WRONG}', dst, check=False)
    assert re.search(r'unauthorized|401', out, re.I), out
    assert dst not in ctr('images', 'ls', '--quiet').split()

    ctr('images', 'pull', '--plain-http', '--snapshotter', 'native', '--user',
        f'{PULLER}:{PW[PULLER]}', dst)
    theirs = f'{server.host}/{repo}:by-puller'
    ctr('images', 'tag', dst, theirs)
    mark = log_mark(server)
    out = ctr('images', 'push', '--plain-http', '--user', f'{PULLER}:{PW[PULLER]}',
              theirs, check=False)
    assert re.search(r'denied|unauthorized|insufficient_scope|forbidden|403|401', out,
                     re.I), out
    refused_push(server, mode, mark, repo, 'by-puller')
    ctr('images', 'rm', '--sync', dst, theirs)


def test_auth_registries_challenge(auth_registries: dict[str, AuthServer]) -> None:
    """(setup check) both registries challenge: Basic, and Bearer with a realm"""
    for mode, srv in auth_registries.items():
        r = httpx.get(srv.url + '/v2/', timeout=10)
        assert r.status_code == 401
        scheme = r.headers['www-authenticate'].split()[0]
        assert scheme == ('Basic' if mode == 'basic' else 'Bearer')
