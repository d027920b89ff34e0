"""skopeo (containers/image) against the registry: Debian 12's skopeo 1.9 and, for the
key operations, trixie's skopeo 1.18 (run through its private loader)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.interop.conftest import find_client
from tests.interop.layout import (
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
    sha256,
)

pytestmark = [pytest.mark.interop, pytest.mark.skopeo]

OCI_ZSTD_LAYER = 'application/vnd.oci.image.layer.v1.tar+zstd'
BOTH = pytest.mark.parametrize('skopeo_bin', ['skopeo', 'skopeo-1.18'])


def skopeo(registry: Registry, exe: str, *args: str) -> str:
    return run([find_client(exe), *args], registry=registry).stdout


@BOTH
def test_skopeo_copy_all_index_in_and_out(registry: Registry, workdir: Path, repo: str,
                                          skopeo_bin: str) -> None:
    """copy --all of a multi-arch OCI index in and out, inspect --raw"""
    index_digest = write_index_layout(workdir / 'src', 'v1', seed=f'copy-all {repo}')
    ref = f'docker://{host(registry)}/{repo}:v1'
    digestfile = workdir / 'digest'
    skopeo(registry, skopeo_bin, 'copy', '--all', '--dest-tls-verify=false',
           '--digestfile', str(digestfile), f'oci:{workdir / "src"}:v1', ref)
    assert digestfile.read_text().strip() == index_digest

    raw = skopeo(registry, skopeo_bin, 'inspect', '--raw', '--tls-verify=false', ref)
    assert sha256(raw.encode()) == index_digest
    index = served(registry, repo, index_digest, OCI_INDEX)
    for child in index['manifests']:
        served(registry, repo, child['digest'], OCI_MANIFEST)

    skopeo(registry, skopeo_bin, 'copy', '--all', '--src-tls-verify=false', ref,
           f'oci:{workdir / "out"}:v1')
    out_index = json.loads((workdir / 'out' / 'index.json').read_text())
    assert out_index['manifests'][0]['digest'] == index_digest
    # Every manifest came back byte for byte (the layout names files by digest).
    for child in index['manifests']:
        assert (workdir / 'out' / 'blobs' / 'sha256' / child['digest'][7:]).is_file()


@BOTH
def test_skopeo_list_tags_copy_between_repos_and_delete(
        registry: Registry, workdir: Path, repo: str, skopeo_bin: str) -> None:
    """list-tags, copy docker->docker (tag and cross-repository mount), delete"""
    write_index_layout(workdir / 'src', 'v1', arches=('amd64',), seed=f'tags {repo}')
    src = f'docker://{host(registry)}/{repo}'
    # Without --all, skopeo copies the host's platform out of the index: a manifest.
    skopeo(registry, skopeo_bin, 'copy', '--dest-tls-verify=false',
           '--digestfile', str(workdir / 'digest'), f'oci:{workdir / "src"}:v1',
           f'{src}:v1')
    digest = (workdir / 'digest').read_text().strip()
    served(registry, repo, digest, OCI_MANIFEST)
    skopeo(registry, skopeo_bin, 'copy', '--src-tls-verify=false',
           '--dest-tls-verify=false', f'{src}:v1', f'{src}:v2')
    assert resolve(registry, repo, 'v2') == digest
    tags = json.loads(skopeo(registry, skopeo_bin, 'list-tags', '--tls-verify=false',
                             src))['Tags']
    assert sorted(tags) == ['v1', 'v2']

    # docker -> docker between repositories: the blobs are mounted, not re-sent.
    other = f'{repo}-other'
    dst = f'docker://{host(registry)}/{other}'
    mark = log_mark(registry)
    skopeo(registry, skopeo_bin, 'copy', '--src-tls-verify=false',
           '--dest-tls-verify=false', f'{src}:v1', f'{dst}:copied')
    assert mounted(log_since(registry, mark), other)
    raw = skopeo(registry, skopeo_bin, 'inspect', '--raw', '--tls-verify=false',
                 f'{dst}:copied')
    assert raw == skopeo(registry, skopeo_bin, 'inspect', '--raw', '--tls-verify=false',
                         f'{src}:v1')
    served(registry, other, sha256(raw.encode()))

    skopeo(registry, skopeo_bin, 'delete', '--tls-verify=false', f'{dst}:copied')
    assert manifest_status(registry, other, 'copied') == 404
    assert manifest_status(registry, other, sha256(raw.encode())) == 404


@BOTH
def test_skopeo_list_tags_follows_link_pages(paged_registry: Registry, workdir: Path,
                                             repo: str, skopeo_bin: str) -> None:
    """list-tags across pages (Link headers, 2 tags per page)"""
    registry = paged_registry
    write_index_layout(workdir / 'src', 'v1', arches=('amd64',), seed=f'pages {repo}')
    push_layout(registry, workdir / 'src', repo, 'v1')
    src = f'docker://{host(registry)}/{repo}'
    for tag in ('b', 'a', 'c'):
        skopeo(registry, skopeo_bin, 'copy', '--src-tls-verify=false',
               '--dest-tls-verify=false', f'{src}:v1', f'{src}:{tag}')
    tags = json.loads(skopeo(registry, skopeo_bin, 'list-tags', '--tls-verify=false',
                             src))['Tags']
    assert tags == ['a', 'b', 'c', 'v1'], ('tags in ASCII order, all pages', tags)
    for tag in tags:
        served(registry, repo, resolve(registry, repo, tag))


@BOTH
def test_skopeo_copy_zstd_layers(registry: Registry, workdir: Path, repo: str,
                                 skopeo_bin: str) -> None:
    """copy docker-archive -> registry with zstd layers, and back out"""
    write_docker_archive(workdir / 'img.tar', 'example/zstd:v1', seed=repo,
                         random_bytes=1 << 20)
    ref = f'docker://{host(registry)}/{repo}:zstd'
    skopeo(registry, skopeo_bin, 'copy', '--dest-tls-verify=false', '--format', 'oci',
           '--dest-compress-format', 'zstd', '--digestfile', str(workdir / 'digest'),
           f'docker-archive:{workdir / "img.tar"}', ref)
    digest = (workdir / 'digest').read_text().strip()
    manifest = served(registry, repo, digest, OCI_MANIFEST)
    assert manifest['layers'][0]['mediaType'] == OCI_ZSTD_LAYER
    skopeo(registry, skopeo_bin, 'copy', '--src-tls-verify=false', ref,
           f'oci:{workdir / "out"}:zstd')
    layer = manifest['layers'][0]['digest']
    assert sha256((workdir / 'out' / 'blobs' / 'sha256' / layer[7:]).read_bytes()) == layer
