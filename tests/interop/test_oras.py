"""oras (oras-go) against the registry, over plain HTTP; referrers through the
referrers API (``--distribution-spec v1.1-referrers-api``), never the tag schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.interop.conftest import find_client
from tests.interop.layout import OCI_INDEX, OCI_MANIFEST
from tests.interop.util import (
    Registry,
    host,
    log_mark,
    log_since,
    manifest_status,
    referrers,
    resolve,
    run,
    served,
    sha256,
    tags,
)

pytestmark = [pytest.mark.interop, pytest.mark.oras]

API = ('--distribution-spec', 'v1.1-referrers-api')


def oras(registry: Registry, cwd: Path, *args: str) -> str:
    return run([find_client('oras'), *args], registry=registry, cwd=cwd).stdout


def oras_json(registry: Registry, cwd: Path, *args: str) -> dict[str, Any]:
    return dict(json.loads(oras(registry, cwd, *args, '--format', 'json')))


def test_oras_push_pull_tags_fetch_delete(registry: Registry, workdir: Path,
                                          repo: str) -> None:
    """push, pull, repo tags, manifest fetch, blob fetch, manifest delete"""
    (workdir / 'hello.txt').write_text(f'hello from oras {repo}\n')
    (workdir / 'notes.md').write_text('# notes\n')
    ref = f'{host(registry)}/{repo}'
    pushed = oras_json(registry, workdir, 'push', '--plain-http',
                       '--artifact-type', 'application/vnd.example.interop',
                       f'{ref}:v1,v1.0', 'hello.txt:text/plain', 'notes.md:text/markdown')
    digest = pushed['digest']
    manifest = served(registry, repo, digest, OCI_MANIFEST)
    assert manifest['artifactType'] == 'application/vnd.example.interop'
    assert [layer['mediaType'] for layer in manifest['layers']] == [
        'text/plain', 'text/markdown']

    oras(registry, workdir, 'pull', '--plain-http', '-o', 'out', f'{ref}:v1')
    assert (workdir / 'out' / 'hello.txt').read_text() == f'hello from oras {repo}\n'
    assert (workdir / 'out' / 'notes.md').read_text() == '# notes\n'

    listed = oras(registry, workdir, 'repo', 'tags', '--plain-http', ref).split()
    assert sorted(listed) == ['v1', 'v1.0'] == tags(registry, repo)

    raw = oras(registry, workdir, 'manifest', 'fetch', '--plain-http', f'{ref}:v1.0')
    assert json.loads(raw) == manifest
    desc = json.loads(oras(registry, workdir, 'manifest', 'fetch', '--plain-http',
                           '--descriptor', f'{ref}@{digest}'))
    assert desc['digest'] == digest
    assert desc['mediaType'] == OCI_MANIFEST

    layer = manifest['layers'][0]['digest']
    blob = oras(registry, workdir, 'blob', 'fetch', '--plain-http', '--output', '-',
                f'{ref}@{layer}')
    assert blob == f'hello from oras {repo}\n'

    oras(registry, workdir, 'manifest', 'delete', '--plain-http', '--force',
         f'{ref}@{digest}')
    assert manifest_status(registry, repo, digest) == 404
    assert manifest_status(registry, repo, 'v1') == 404


def test_oras_attach_discover_copy_through_referrers_api(registry: Registry,
                                                         workdir: Path, repo: str) -> None:
    """attach, discover (referrers API), copy -r with referrers"""
    (workdir / 'app.txt').write_text(f'app {repo}\n')
    (workdir / 'sbom.json').write_text('{"sbom": true}\n')
    (workdir / 'sig.txt').write_text('signature\n')
    ref = f'{host(registry)}/{repo}'
    subject = oras_json(registry, workdir, 'push', '--plain-http', f'{ref}:v1',
                        'app.txt:text/plain')['digest']
    served(registry, repo, subject, OCI_MANIFEST)

    mark = log_mark(registry)
    sbom = oras_json(registry, workdir, 'attach', '--plain-http', *API,
                     '--artifact-type', 'application/vnd.example.sbom',
                     '--annotation', 'org.example.kind=sbom', f'{ref}:v1',
                     'sbom.json:application/json')
    sig = oras_json(registry, workdir, 'attach', '--plain-http', *API,
                    '--artifact-type', 'application/vnd.example.signature',
                    f'{ref}@{subject}', 'sig.txt:text/plain')
    for d in (sbom['digest'], sig['digest']):
        assert served(registry, repo, d, OCI_MANIFEST)['subject']['digest'] == subject

    found = oras_json(registry, workdir, 'discover', '--plain-http', *API, f'{ref}:v1')
    by_type = {m['artifactType']: m for m in found['manifests']}
    assert set(by_type) == {'application/vnd.example.sbom',
                            'application/vnd.example.signature'}
    assert by_type['application/vnd.example.sbom']['digest'] == sbom['digest']
    assert by_type['application/vnd.example.sbom']['annotations'][
        'org.example.kind'] == 'sbom'
    filtered = oras_json(registry, workdir, 'discover', '--plain-http', *API,
                         '--artifact-type', 'application/vnd.example.signature',
                         f'{ref}:v1')
    assert [m['digest'] for m in filtered['manifests']] == [sig['digest']]
    # Through the API: the referrers endpoint was used and no fallback tag written.
    assert f'/v2/{repo}/referrers/' in log_since(registry, mark)
    assert tags(registry, repo) == ['v1']
    assert {m['digest'] for m in referrers(registry, repo, subject)} == {
        sbom['digest'], sig['digest']}

    # copy -r: the subject and its referrers land in another repository.
    other = f'{repo}-copy'
    oras(registry, workdir, 'cp', '-r', '--from-plain-http', '--to-plain-http',
         '--from-distribution-spec', 'v1.1-referrers-api',
         '--to-distribution-spec', 'v1.1-referrers-api', f'{ref}:v1',
         f'{host(registry)}/{other}:v1')
    served(registry, other, subject, OCI_MANIFEST)
    copied = oras_json(registry, workdir, 'discover', '--plain-http', *API,
                       f'{host(registry)}/{other}@{subject}')
    assert {m['digest'] for m in copied['manifests']} == {sbom['digest'], sig['digest']}
    assert tags(registry, other) == ['v1']
    for d in (sbom['digest'], sig['digest']):
        served(registry, other, d, OCI_MANIFEST)


def test_oras_tags_catalog_referrers_follow_link_pages(paged_registry: Registry,
                                                       workdir: Path, repo: str) -> None:
    """repo tags, repo ls and discover across pages (Link headers)"""
    registry = paged_registry
    (workdir / 'a.txt').write_text(f'paged {repo}\n')
    ref = f'{host(registry)}/{repo}'
    subject = oras_json(registry, workdir, 'push', '--plain-http', f'{ref}:v1,b,a,c,V2',
                        'a.txt:text/plain')['digest']
    served(registry, repo, subject, OCI_MANIFEST)
    listed = oras(registry, workdir, 'repo', 'tags', '--plain-http', ref).split()
    assert listed == ['V2', 'a', 'b', 'c', 'v1'], ('tags in ASCII order, all pages', listed)
    for i in range(2):
        oras(registry, workdir, 'push', '--plain-http', f'{ref}-{i}:v1', 'a.txt:text/plain')
    repos = oras(registry, workdir, 'repo', 'ls', '--plain-http', host(registry)).split()
    assert [r for r in repos if r.startswith(repo)] == [repo, f'{repo}-0', f'{repo}-1']

    attached = set()
    for kind in ('one', 'two', 'three'):
        attached.add(oras_json(registry, workdir, 'attach', '--plain-http', *API,
                               '--artifact-type', f'application/vnd.example.{kind}',
                               f'{ref}@{subject}', 'a.txt:text/plain')['digest'])
    for d in attached:
        served(registry, repo, d, OCI_MANIFEST)
    found = oras_json(registry, workdir, 'discover', '--plain-http', *API, f'{ref}:v1')
    assert {m['digest'] for m in found['manifests']} == attached


def test_oras_blob_push_delete_manifest_push_tag(registry: Registry, workdir: Path,
                                                 repo: str) -> None:
    """blob push, manifest push (raw OCI index), tag, blob delete"""
    ref = f'{host(registry)}/{repo}'
    data = f'a blob pushed alone {repo}\n'.encode()
    (workdir / 'blob.bin').write_bytes(data)
    desc = json.loads(oras(registry, workdir, 'blob', 'push', '--plain-http',
                           '--descriptor', ref, 'blob.bin'))
    assert desc['digest'] == sha256(data)
    assert desc['size'] == len(data)
    r = httpx.get(f'{registry.url}/v2/{repo}/blobs/{desc["digest"]}', timeout=30)
    assert (r.status_code, r.content) == (200, data)

    # A raw manifest: an index of the artifact oras pushes first.
    (workdir / 'a.txt').write_text('a\n')
    child = oras_json(registry, workdir, 'push', '--plain-http', f'{ref}:child',
                      'a.txt:text/plain')
    index = json.dumps({'schemaVersion': 2, 'mediaType': OCI_INDEX, 'manifests': [
        {'mediaType': child['mediaType'], 'digest': child['digest'],
         'size': child['size']}]}, indent=1).encode()
    (workdir / 'index.json').write_bytes(index)
    oras(registry, workdir, 'manifest', 'push', '--plain-http', '--media-type', OCI_INDEX,
         f'{ref}:index', 'index.json')
    assert served(registry, repo, sha256(index), OCI_INDEX)['manifests'][0][
        'digest'] == child['digest']
    oras(registry, workdir, 'tag', '--plain-http', f'{ref}:index', 'v1', 'v1.0')
    assert tags(registry, repo) == ['child', 'index', 'v1', 'v1.0']
    assert resolve(registry, repo, 'v1.0') == sha256(index)

    oras(registry, workdir, 'blob', 'delete', '--plain-http', '--force',
         f'{ref}@{desc["digest"]}')
    r = httpx.get(f'{registry.url}/v2/{repo}/blobs/{desc["digest"]}', timeout=30)
    assert r.status_code == 404
