"""containerd, driven by `ctr`, as a private daemon (own root, state, socket and
pidfile; no CRI plugin) against the registry over plain HTTP."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.interop.conftest import find_client, missing
from tests.interop.daemons import Containerd
from tests.interop.layout import INDEX_TYPES, write_docker_archive, write_index_layout
from tests.interop.util import Registry, host, push_layout, resolve, run, served, tags

pytestmark = [pytest.mark.interop, pytest.mark.containerd]

Ctr = Callable[..., str]


@pytest.fixture(scope='module')
def daemon() -> Iterator[Containerd]:
    if os.geteuid() != 0:
        missing('containerd needs root')
    found = [find_client('containerd'), find_client('ctr')]
    d = Containerd(*found)
    yield d
    d.stop()


@pytest.fixture
def ctr(daemon: Containerd, registry: Registry) -> Ctr:
    find_client('containerd')  # record the versions for this test
    find_client('ctr')

    def call(*args: str) -> str:
        return run([*daemon.ctr_cmd, *args], registry=registry).stdout

    return call


@pytest.mark.parametrize('fmt', ['oci', 'docker'])
def test_ctr_pull_all_platforms_tag_push_pull_by_digest(
        registry: Registry, workdir: Path, repo: str, ctr: Ctr, fmt: str) -> None:
    """pull --all-platforms (OCI index / Docker list), tag, push, pull back by digest"""
    index_digest = write_index_layout(workdir / 'src', 'v1', seed=f'ctr {repo}', fmt=fmt)
    push_layout(registry, workdir / 'src', f'{repo}-src', 'v1')
    src = f'{host(registry)}/{repo}-src:v1'
    ctr('images', 'pull', '--plain-http', '--all-platforms', '--snapshotter', 'native', src)
    # Every platform's manifest came down, not only the host's.
    content = ctr('content', 'ls', '--quiet').split()
    children = served(registry, f'{repo}-src', index_digest)['manifests']
    for child in children:
        assert child['digest'] in content

    dst = f'{host(registry)}/{repo}:v1'
    ctr('images', 'tag', src, dst)
    ctr('images', 'push', '--plain-http', dst)
    index = served(registry, repo, index_digest)
    assert index['mediaType'] in INDEX_TYPES
    for child in index['manifests']:
        served(registry, repo, child['digest'], child['mediaType'])
    assert tags(registry, repo) == ['v1']

    ctr('images', 'rm', '--sync', src, dst)
    assert index_digest not in ctr('content', 'ls', '--quiet').split()
    by_digest = f'{host(registry)}/{repo}@{index_digest}'
    ctr('images', 'pull', '--plain-http', '--all-platforms', '--snapshotter', 'native',
        by_digest)
    listed = ctr('images', 'ls')
    assert by_digest in listed
    assert index_digest in listed
    content = ctr('content', 'ls', '--quiet').split()
    for child in index['manifests']:
        assert child['digest'] in content
    ctr('images', 'rm', '--sync', by_digest)


def test_ctr_import_push_new_content_pull_by_digest(registry: Registry, workdir: Path,
                                                    repo: str, ctr: Ctr) -> None:
    """import (docker archive), push (new 8 MiB layer), pull back by digest"""
    image_id = write_docker_archive(workdir / 'img.tar', f'interop/{repo}:loaded',
                                    seed=repo, random_bytes=8 << 20)
    ctr('images', 'import', '--snapshotter', 'native', '--no-unpack',
        str(workdir / 'img.tar'))
    local = f'docker.io/interop/{repo}:loaded'
    dst = f'{host(registry)}/{repo}:v1'
    ctr('images', 'tag', local, dst)
    ctr('images', 'push', '--plain-http', dst)
    digest = resolve(registry, repo, 'v1')
    manifest = served(registry, repo, digest)
    assert manifest['config']['digest'] == image_id
    assert manifest['layers'][0]['size'] > 8 << 20

    ctr('images', 'rm', '--sync', local, dst)
    by_digest = f'{host(registry)}/{repo}@{digest}'
    ctr('images', 'pull', '--plain-http', '--snapshotter', 'native', by_digest)
    assert image_id in ctr('content', 'ls', '--quiet').split()
    ctr('images', 'rm', '--sync', by_digest)
