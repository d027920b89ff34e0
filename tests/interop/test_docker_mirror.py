"""dockerd with ``registry-mirrors`` pulling through oci-ref's ``default`` upstream
(issue 13, the third way to reach upstream content).

dockerd uses a mirror for Docker Hub names only, and sends them with no prefix and
no ``ns``: `docker pull alpine:3` asks the mirror for ``/v2/library/alpine/…``. A
private dockerd (tests/interop/daemons.py) gets the mirror in its daemon.json; a
second oci-ref on loopback stands in for Docker Hub as the mirror's default
upstream. This machine has no route to Docker Hub, so an image dockerd has came
through the mirror (whose access log shows it); the stand-in's log shows that each
piece was fetched once, and an own image under a Docker Hub name wins over the
stand-in's."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.conftest import find_client, missing
from tests.interop.daemons import Dockerd
from tests.interop.layout import write_index_layout
from tests.interop.test_pull_through_clients import assert_fetched_once
from tests.interop.util import host, log_mark, log_since, push_layout, run
from tests.support import Server

pytestmark = [pytest.mark.interop, pytest.mark.docker]


@pytest.fixture(scope='module')
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The stand-in for Docker Hub (plain oci-ref, its access log on)."""
    server = Server(tmp_path_factory.mktemp('hub') / 'data')
    yield server
    server.stop()


@pytest.fixture(scope='module')
def mirror(tmp_path_factory: pytest.TempPathFactory, hub: Server) -> Iterator[Server]:
    base = tmp_path_factory.mktemp('mirror')
    config = base / 'mirror.toml'
    config.write_text(f'[[upstream]]\nname = "hub.test"\nurl = "{hub.url}"\n'
                      'default = true\n')
    server = Server(base / 'data', '--config', str(config))
    yield server
    server.stop()


@pytest.fixture(scope='module')
def daemon(mirror: Server) -> Iterator[Dockerd]:
    if os.geteuid() != 0:
        missing('dockerd needs root')
    d = Dockerd(find_client('dockerd'), find_client('docker'), host(mirror),
                {'registry-mirrors': [mirror.url]})
    yield d
    d.stop()


def image_of(layout: Path, index_digest: str) -> tuple[str, str]:
    """(amd64 manifest digest, its config digest: the image id dockerd reports)."""
    def read(digest: str) -> dict[str, object]:
        path = layout / 'blobs' / 'sha256' / digest.split(':', 1)[1]
        result: dict[str, object] = json.loads(path.read_bytes())
        return result

    manifests = read(index_digest)['manifests']
    assert isinstance(manifests, list)
    (child,) = [m for m in manifests if m['platform']['architecture'] == 'amd64']
    config = read(child['digest'])['config']
    assert isinstance(config, dict)
    return child['digest'], config['digest']


def test_dockerd_registry_mirror_pulls_through_the_default_upstream(
        daemon: Dockerd, mirror: Server, hub: Server, workdir: Path) -> None:
    find_client('dockerd')  # record the versions for this test
    docker = [*daemon.docker_cmd]

    def call(*args: str) -> str:
        return run([*docker, *args], registry=mirror, timeout=300).stdout

    # A Docker Hub official image (library/...) and a user's one, at the stand-in.
    digests = {}
    for name in ('library/mirrored', 'someorg/tool'):
        digests[name] = write_index_layout(workdir / name, 'v1', seed=f'hub {name}')
        push_layout(hub, workdir / name, name, 'v1')
    mark = log_mark(mirror)
    for short, name in (('mirrored:v1', 'library/mirrored'),
                        ('someorg/tool:v1', 'someorg/tool')):
        call('pull', short)
        [image] = json.loads(call('image', 'inspect', short))
        assert image['Id'] == image_of(workdir / name, digests[name])[1]
        assert f'{name.removeprefix("library/")}@{digests[name]}' in image['RepoDigests']
        assert_fetched_once(hub, name)
    # What dockerd sent the mirror: the Docker Hub name, no prefix, no ns.
    log = log_since(mirror, mark)
    for name in ('library/mirrored', 'someorg/tool'):
        assert re.search(rf'"(?:HEAD|GET) /v2/{name}/manifests/v1 HTTP/1.1" 200', log), log
        assert re.search(rf'"GET /v2/{name}/blobs/sha256:[0-9a-f]{{64}} HTTP/1.1" 200',
                         log), log
    assert 'ns=' not in log

    # Own content under a Docker Hub name wins over the default upstream's.
    own = write_index_layout(workdir / 'own', 'v2', seed='own, not the hub')
    push_layout(mirror, workdir / 'own', 'library/mirrored', 'v2')
    hub_other = write_index_layout(workdir / 'hub-v2', 'v2', seed='the hub, not own')
    push_layout(hub, workdir / 'hub-v2', 'library/mirrored', 'v2')
    call('pull', 'mirrored:v2')
    [image] = json.loads(call('image', 'inspect', 'mirrored:v2'))
    assert image['Id'] == image_of(workdir / 'own', own)[1]
    assert image['Id'] != image_of(workdir / 'hub-v2', hub_other)[1]
    call('rmi', '--force', 'mirrored:v1', 'someorg/tool:v1', 'mirrored:v2')
