"""podman (containers/image via libpod) with private storage, against the registry.
The registry is insecure through a registries.conf (CONTAINERS_REGISTRIES_CONF),
not through --tls-verify flags."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.interop.layout import (
    OCI_INDEX,
    OCI_MANIFEST,
    write_docker_archive,
    write_image_layout,
    write_index_layout,
)
from tests.interop.util import ContainersTool, Registry, host, push_layout, served, tags

pytestmark = [pytest.mark.interop, pytest.mark.podman]

Tool = Callable[[str], ContainersTool]


def test_podman_pull_tag_push_pull_back(registry: Registry, workdir: Path, repo: str,
                                        containers_tool: Tool) -> None:
    """pull (multi-arch index), tag, push, pull back by digest"""
    podman = containers_tool('podman')
    write_index_layout(workdir / 'src', 'v1', seed=f'podman {repo}')
    push_layout(registry, workdir / 'src', f'{repo}-src', 'v1')
    src = f'{host(registry)}/{repo}-src:v1'
    podman('pull', '--arch', 'amd64', src)

    dst = f'{host(registry)}/{repo}:v1'
    podman('tag', src, dst)
    podman('push', '--digestfile', str(workdir / 'digest'), dst)
    digest = (workdir / 'digest').read_text().strip()
    manifest = served(registry, repo, digest)
    assert manifest['mediaType'] == OCI_MANIFEST
    assert tags(registry, repo) == ['v1']

    podman('rmi', '--all', '--force')
    podman('pull', f'{host(registry)}/{repo}@{digest}')
    [image] = json.loads(podman('image', 'inspect', f'{host(registry)}/{repo}@{digest}'))
    assert f'{host(registry)}/{repo}@{digest}' in image['RepoDigests']
    assert image['Architecture'] == 'amd64'


def test_podman_manifest_create_add_push_all(registry: Registry, workdir: Path,
                                             repo: str, containers_tool: Tool) -> None:
    """manifest create / add / push --all, pull --arch from the pushed index"""
    podman = containers_tool('podman')
    for arch in ('amd64', 'arm64'):
        write_image_layout(workdir / 'src', arch, arch=arch, seed=f'podman list {repo}')
        push_layout(registry, workdir / 'src', f'{repo}-src', arch)

    podman('manifest', 'create', 'interop-list')
    for arch in ('amd64', 'arm64'):
        podman('manifest', 'add', 'interop-list', f'docker://{host(registry)}/{repo}-src:{arch}')
    podman('manifest', 'push', '--all', '--digestfile', str(workdir / 'digest'),
           'interop-list', f'docker://{host(registry)}/{repo}:multi')
    digest = (workdir / 'digest').read_text().strip()
    index = served(registry, repo, digest, OCI_INDEX)
    assert sorted(m['platform']['architecture'] for m in index['manifests']) == [
        'amd64', 'arm64']
    for child in index['manifests']:
        served(registry, repo, child['digest'], OCI_MANIFEST)

    podman('pull', '--arch', 'arm64', f'{host(registry)}/{repo}:multi')
    [image] = json.loads(podman('image', 'inspect', f'{host(registry)}/{repo}:multi'))
    assert image['Architecture'] == 'arm64'


def test_podman_load_push_big_layer(registry: Registry, workdir: Path, repo: str,
                                    containers_tool: Tool) -> None:
    """load (docker archive), push (new 8 MiB layer), pull back"""
    podman = containers_tool('podman')
    image_id = write_docker_archive(workdir / 'img.tar', f'interop/{repo}:loaded',
                                    seed=repo, random_bytes=8 << 20)
    podman('load', '--input', str(workdir / 'img.tar'))
    dst = f'{host(registry)}/{repo}:v1'
    podman('tag', f'interop/{repo}:loaded', dst)
    podman('push', '--digestfile', str(workdir / 'digest'), dst)
    digest = (workdir / 'digest').read_text().strip()
    manifest = served(registry, repo, digest)
    assert manifest['config']['digest'] == image_id
    assert manifest['layers'][0]['size'] > 8 << 20

    podman('rmi', '--all', '--force')
    podman('pull', dst)
    [image] = json.loads(podman('image', 'inspect', dst))
    assert image['Digest'] == digest
