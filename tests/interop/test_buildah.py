"""buildah with private storage, against the registry (insecure through a
registries.conf, as for podman)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.interop.layout import OCI_INDEX, OCI_MANIFEST, write_image_layout
from tests.interop.util import ContainersTool, Registry, host, push_layout, served, tags

pytestmark = [pytest.mark.interop, pytest.mark.buildah]

Tool = Callable[[str], ContainersTool]


def test_buildah_from_scratch_commit_push_pull(registry: Registry, workdir: Path,
                                              repo: str, containers_tool: Tool) -> None:
    """from scratch, copy, commit, push, pull back by digest, tag, push again"""
    buildah = containers_tool('buildah')
    (workdir / 'hello.txt').write_text(f'built by buildah {repo}\n')
    ctr = buildah('from', 'scratch').strip()
    buildah('copy', ctr, str(workdir / 'hello.txt'), '/hello.txt')
    buildah('config', '--label', 'org.example.test=buildah', '--cmd', '/hello.txt', ctr)
    image_id = buildah('commit', '--format', 'oci', ctr, 'interop-built').strip()

    dst = f'{host(registry)}/{repo}:v1'
    buildah('push', '--digestfile', str(workdir / 'digest'), 'interop-built',
            f'docker://{dst}')
    digest = (workdir / 'digest').read_text().strip()
    manifest = served(registry, repo, digest, OCI_MANIFEST)
    assert len(manifest['layers']) == 1

    buildah('rm', '--all')
    buildah('rmi', '--all', '--force')
    buildah('pull', f'{host(registry)}/{repo}@{digest}')
    info = json.loads(buildah('inspect', '--type', 'image',
                              f'{host(registry)}/{repo}@{digest}'))
    assert info['FromImageID'] == image_id
    assert info['OCIv1']['config']['Labels']['org.example.test'] == 'buildah'

    buildah('tag', f'{host(registry)}/{repo}@{digest}', f'{host(registry)}/{repo}:v2')
    buildah('push', f'{host(registry)}/{repo}:v2')
    assert tags(registry, repo) == ['v1', 'v2']
    assert served(registry, repo, digest, OCI_MANIFEST) == manifest


def test_buildah_manifest_create_add_push_all(registry: Registry, workdir: Path,
                                              repo: str, containers_tool: Tool) -> None:
    """manifest create / add / push --all"""
    buildah = containers_tool('buildah')
    for arch in ('amd64', 'arm64'):
        write_image_layout(workdir / 'src', arch, arch=arch, seed=f'buildah list {repo}')
        push_layout(registry, workdir / 'src', f'{repo}-src', arch)

    buildah('manifest', 'create', 'interop-list')
    # buildah 1.28's `manifest add` and `manifest push` read the image through a
    # second system context that loads /etc/containers/registries.conf, not
    # CONTAINERS_REGISTRIES_CONF, so they need --tls-verify=false; and `manifest
    # push` then exits 0 having pushed nothing: hence the digest-file check.
    for arch in ('amd64', 'arm64'):
        buildah('manifest', 'add', '--tls-verify=false', 'interop-list',
                f'docker://{host(registry)}/{repo}-src:{arch}')
    buildah('manifest', 'push', '--tls-verify=false', '--all', '--digestfile',
            str(workdir / 'digest'), 'interop-list', f'docker://{host(registry)}/{repo}:multi')
    digest = (workdir / 'digest').read_text().strip()
    assert digest.startswith('sha256:'), 'buildah manifest push wrote no digest'
    index = served(registry, repo, digest, OCI_INDEX)
    assert sorted(m['platform']['architecture'] for m in index['manifests']) == [
        'amd64', 'arm64']
    for child in index['manifests']:
        served(registry, repo, child['digest'], OCI_MANIFEST)
    assert tags(registry, repo) == ['multi']
