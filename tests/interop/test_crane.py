"""crane (go-containerregistry, built from Debian's sources) against the registry."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from tests.interop.conftest import find_client
from tests.interop.layout import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    write_docker_archive,
    write_index_layout,
)
from tests.interop.util import (
    Registry,
    host,
    log_mark,
    log_since,
    manifest_status,
    mounted,
    push_layout,
    resolve,
    run,
    served,
    tags,
)

pytestmark = [pytest.mark.interop, pytest.mark.crane]


def crane(registry: Registry, *args: str, cwd: Path | None = None) -> str:
    return run([find_client('crane'), *args, '--insecure'], registry=registry,
               cwd=cwd).stdout


def test_crane_push_tarball_pull_copy_list_delete(registry: Registry, workdir: Path,
                                                  repo: str) -> None:
    """push (tarball), pull, copy, tag, ls, catalog, digest, manifest, validate, delete"""
    ref = f'{host(registry)}/{repo}'
    config_digest = write_docker_archive(workdir / 'img.tar', 'example/app:v1', seed=repo)
    crane(registry, 'push', str(workdir / 'img.tar'), f'{ref}:v1',
          '--image-refs', str(workdir / 'refs'))
    digest = (workdir / 'refs').read_text().strip().rsplit('@', 1)[1]
    manifest = served(registry, repo, digest, DOCKER_MANIFEST)
    assert manifest['config']['digest'] == config_digest

    assert crane(registry, 'digest', f'{ref}:v1').strip() == digest
    assert json.loads(crane(registry, 'manifest', f'{ref}:v1')) == manifest
    crane(registry, 'validate', '--remote', f'{ref}:v1')

    crane(registry, 'pull', f'{ref}:v1', str(workdir / 'out.tar'))
    with tarfile.open(workdir / 'out.tar') as tar:
        saved = json.load(tar.extractfile('manifest.json'))  # type: ignore[arg-type]
    assert saved[0]['Config'].endswith(config_digest.split(':')[1])

    other = f'{repo}-copy'
    mark = log_mark(registry)
    crane(registry, 'copy', f'{ref}:v1', f'{host(registry)}/{other}:v2')
    assert mounted(log_since(registry, mark), other)
    assert crane(registry, 'digest', f'{host(registry)}/{other}:v2').strip() == digest
    served(registry, other, digest, DOCKER_MANIFEST)
    crane(registry, 'tag', f'{ref}:v1', 'latest')
    assert resolve(registry, repo, 'latest') == digest

    assert sorted(crane(registry, 'ls', ref).split()) == ['latest', 'v1']
    catalog = crane(registry, 'catalog', host(registry)).split()
    assert repo in catalog
    assert other in catalog

    crane(registry, 'delete', f'{host(registry)}/{other}@{digest}')
    assert manifest_status(registry, other, digest) == 404
    assert manifest_status(registry, other, 'v2') == 404
    assert manifest_status(registry, repo, 'v1') == 200  # another repository


def test_crane_copy_multi_arch_index_and_validate(registry: Registry, workdir: Path,
                                                  repo: str) -> None:
    """copy (multi-arch OCI index), pull --format oci, validate --remote, ls"""
    index_digest = write_index_layout(workdir / 'src', 'v1', seed=f'crane {repo}')
    src_repo = f'{repo}-src'
    push_layout(registry, workdir / 'src', src_repo, 'v1')
    ref = f'{host(registry)}/{repo}'
    crane(registry, 'copy', f'{host(registry)}/{src_repo}:v1', f'{ref}:multi')
    assert crane(registry, 'digest', f'{ref}:multi').strip() == index_digest
    index = served(registry, repo, index_digest, OCI_INDEX)
    for child in index['manifests']:
        served(registry, repo, child['digest'], OCI_MANIFEST)
    crane(registry, 'validate', '--remote', f'{ref}:multi')
    crane(registry, 'pull', '--format', 'oci', f'{ref}:multi', str(workdir / 'layout'))
    assert (workdir / 'layout' / 'blobs' / 'sha256' / index_digest[7:]).is_file()
    assert tags(registry, repo) == ['multi']
    assert crane(registry, 'ls', ref).split() == ['multi']


def test_crane_ls_catalog_follow_link_pages(paged_registry: Registry, workdir: Path,
                                            repo: str) -> None:
    """ls and catalog across pages (Link headers, 2 per page)"""
    registry = paged_registry
    write_index_layout(workdir / 'src', 'v1', arches=('amd64',), seed=f'pages {repo}')
    names = [f'{repo}-{i}' for i in range(3)]
    for name in names:
        push_layout(registry, workdir / 'src', name, 'v1')
    ref = f'{host(registry)}/{names[0]}'
    for tag in ('b', 'a', 'c', 'V2'):
        crane(registry, 'tag', f'{ref}:v1', tag)
    digest = resolve(registry, names[0], 'v1')
    assert {resolve(registry, names[0], t) for t in ('b', 'a', 'c', 'V2')} == {digest}
    served(registry, names[0], digest)
    listed = crane(registry, 'ls', ref).split()
    assert listed == ['V2', 'a', 'b', 'c', 'v1'], ('tags in ASCII order, all pages', listed)
    catalog = crane(registry, 'catalog', host(registry)).split()
    assert [n for n in catalog if n.startswith(repo)] == names
