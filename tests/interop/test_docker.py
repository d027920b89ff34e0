"""docker: the CLI with a private dockerd (own data root, exec root, socket and
pidfile; no iptables, no bridge, no IP forwarding; the registry as an insecure
registry), and the CLI alone (`docker manifest`, which needs no engine)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.interop.conftest import find_client, missing
from tests.interop.daemons import Dockerd
from tests.interop.layout import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    write_docker_archive,
    write_image_layout,
    write_index_layout,
)
from tests.interop.util import (
    Registry,
    host,
    log_mark,
    log_since,
    mounted,
    push_layout,
    run,
    served,
    tags,
)

pytestmark = [pytest.mark.interop, pytest.mark.docker]

Docker = Callable[..., str]


@pytest.fixture(scope='module')
def daemon(registry: Registry) -> Iterator[Dockerd]:
    if os.geteuid() != 0:
        missing('dockerd needs root')
    d = Dockerd(find_client('dockerd'), find_client('docker'), host(registry))
    yield d
    d.stop()


@pytest.fixture
def docker(daemon: Dockerd, registry: Registry) -> Docker:
    find_client('dockerd')  # record the versions for this test
    find_client('docker')

    def call(*args: str) -> str:
        return run([*daemon.docker_cmd, *args], registry=registry, timeout=300).stdout

    return call


def test_docker_pull_tag_push_pull_by_digest(registry: Registry, workdir: Path,
                                             repo: str, docker: Docker) -> None:
    """pull (multi-arch OCI index, two platforms), tag, push, pull back by digest"""
    write_index_layout(workdir / 'src', 'v1', seed=f'docker {repo}')
    push_layout(registry, workdir / 'src', f'{repo}-src', 'v1')
    src = f'{host(registry)}/{repo}-src:v1'
    docker('pull', src)
    [image] = json.loads(docker('image', 'inspect', src))
    assert image['Architecture'] == 'amd64'

    dst = f'{host(registry)}/{repo}:v1'
    docker('tag', src, dst)
    mark = log_mark(registry)
    out = docker('push', dst)
    digest = re.search(r'digest: (sha256:[0-9a-f]{64})', out)
    assert digest, out
    manifest = served(registry, repo, digest[1], DOCKER_MANIFEST)
    assert manifest['config']['digest'] == image['Id']
    assert mounted(log_since(registry, mark), repo)  # the layer came from -src

    arm = f'{host(registry)}/{repo}:arm64'
    docker('pull', '--platform', 'linux/arm64', src)
    docker('tag', src, arm)
    out = docker('push', arm)
    arm_digest = re.search(r'digest: (sha256:[0-9a-f]{64})', out)
    assert arm_digest, out
    [arm_image] = json.loads(docker('image', 'inspect', arm))
    assert arm_image['Architecture'] == 'arm64'
    assert served(registry, repo, arm_digest[1], DOCKER_MANIFEST)['config'][
        'digest'] == arm_image['Id']
    assert tags(registry, repo) == ['arm64', 'v1']

    docker('rmi', '--force', src, dst, arm)
    by_digest = f'{host(registry)}/{repo}@{digest[1]}'
    docker('pull', by_digest)
    [pulled] = json.loads(docker('image', 'inspect', by_digest))
    assert by_digest in pulled['RepoDigests']
    assert pulled['Id'] == image['Id']
    docker('rmi', '--force', by_digest)


def test_docker_manifest_create_push_without_engine(registry: Registry, workdir: Path,
                                                    repo: str) -> None:
    """docker manifest create / annotate / push --insecure / inspect (no engine)"""
    exe = find_client('docker')
    config = workdir / 'docker-config'
    config.mkdir()
    # No engine: the CLI never needs one for `docker manifest`.
    cli = [exe, '--config', str(config), '--host', f'unix://{workdir}/no-engine.sock']
    for arch in ('amd64', 'arm64'):
        write_image_layout(workdir / 'src', arch, arch=arch, seed=f'manifest {repo}',
                           fmt='docker')
        push_layout(registry, workdir / 'src', f'{repo}-src', arch)

    src = f'{host(registry)}/{repo}-src'
    lst = f'{host(registry)}/{repo}:multi'
    run([*cli, 'manifest', 'create', '--insecure', lst, f'{src}:amd64', f'{src}:arm64'],
        registry=registry)
    run([*cli, 'manifest', 'annotate', '--variant', 'v8', lst, f'{src}:arm64'],
        registry=registry)
    out = run([*cli, 'manifest', 'push', '--insecure', lst], registry=registry).stdout
    digest = re.findall(r'sha256:[0-9a-f]{64}', out)[-1]
    index = served(registry, repo, digest, DOCKER_LIST)
    platforms = sorted((m['platform']['architecture'], m['platform'].get('variant', ''))
                       for m in index['manifests'])
    assert platforms == [('amd64', ''), ('arm64', 'v8')]
    for child in index['manifests']:
        served(registry, repo, child['digest'], DOCKER_MANIFEST)
    assert tags(registry, repo) == ['multi']

    inspected = json.loads(run([*cli, 'manifest', 'inspect', '--insecure', lst],
                               registry=registry).stdout)
    assert [m['digest'] for m in inspected['manifests']] == [
        m['digest'] for m in index['manifests']]


def test_docker_load_push_big_layer_pull_by_digest(registry: Registry, workdir: Path,
                                                   repo: str, docker: Docker) -> None:
    """load, push (new 8 MiB layer: streamed chunked PATCH), pull back by digest"""
    image_id = write_docker_archive(workdir / 'img.tar', f'interop/{repo}:loaded',
                                    seed=repo, random_bytes=8 << 20)
    docker('load', '--input', str(workdir / 'img.tar'))
    dst = f'{host(registry)}/{repo}:v1'
    docker('tag', f'interop/{repo}:loaded', dst)
    mark = log_mark(registry)
    out = docker('push', dst)
    log = log_since(registry, mark)
    digest = re.search(r'digest: (sha256:[0-9a-f]{64})', out)
    assert digest, out
    assert re.search(r'"PATCH /v2/[^ ]*/blobs/uploads/[^ ]* HTTP/1.1" 202', log), log
    manifest = served(registry, repo, digest[1], DOCKER_MANIFEST)
    assert manifest['config']['digest'] == image_id
    assert manifest['layers'][0]['size'] > 8 << 20

    docker('rmi', '--force', f'interop/{repo}:loaded', dst)
    by_digest = f'{host(registry)}/{repo}@{digest[1]}'
    docker('pull', by_digest)
    [pulled] = json.loads(docker('image', 'inspect', by_digest))
    assert pulled['Id'] == image_id
    docker('rmi', '--force', by_digest)
