"""skopeo (containers/image) against oci-ref."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.interop.conftest import find_client
from tests.interop.layout import OCI_INDEX, write_index_layout
from tests.support import Server

pytestmark = pytest.mark.interop


def skopeo(*args: str) -> str:
    exe = find_client('skopeo')
    done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def host(registry: Server) -> str:
    return f'127.0.0.1:{registry.port}'


def test_skopeo_copy_all_index_in_and_out(registry: Server, workdir: Path) -> None:
    index_digest = write_index_layout(workdir / 'src', 'v1', seed='copy-all')
    ref = f'docker://{host(registry)}/interop/skopeo/multi:v1'
    skopeo('copy', '--all', '--dest-tls-verify=false', f'oci:{workdir / "src"}:v1', ref)

    raw = skopeo('inspect', '--raw', '--tls-verify=false', ref)
    assert 'sha256:' + hashlib.sha256(raw.encode()).hexdigest() == index_digest
    r = httpx.get(f'{registry.url}/v2/interop/skopeo/multi/manifests/{index_digest}')
    assert r.status_code == 200
    assert r.headers['content-type'] == OCI_INDEX
    assert r.headers['docker-content-digest'] == index_digest

    skopeo('copy', '--all', '--src-tls-verify=false', ref, f'oci:{workdir / "out"}:v1')
    out_index = json.loads((workdir / 'out' / 'index.json').read_text())
    assert out_index['manifests'][0]['digest'] == index_digest
    # Every blob came back byte for byte (the layout names files by their digest).
    for child in json.loads(raw)['manifests']:
        assert (workdir / 'out' / 'blobs' / 'sha256' / child['digest'][7:]).is_file()


def test_skopeo_list_tags_copy_between_repos_and_delete(registry: Server,
                                                        workdir: Path) -> None:
    write_index_layout(workdir / 'src', 'v1', arches=('amd64',), seed='tags')
    src = f'docker://{host(registry)}/interop/skopeo/one'
    skopeo('copy', '--dest-tls-verify=false', f'oci:{workdir / "src"}:v1', f'{src}:v1')
    skopeo('copy', '--src-tls-verify=false', '--dest-tls-verify=false', f'{src}:v1',
           f'{src}:v2')
    tags = json.loads(skopeo('list-tags', '--tls-verify=false', src))['Tags']
    assert sorted(tags) == ['v1', 'v2']

    # docker -> docker between repositories: the blobs are mounted, not re-sent.
    dst = f'docker://{host(registry)}/interop/skopeo/other'
    skopeo('copy', '--src-tls-verify=false', '--dest-tls-verify=false', f'{src}:v1',
           f'{dst}:copied')
    assert 'mount=' in registry.log.read_text()
    assert skopeo('inspect', '--raw', '--tls-verify=false', f'{dst}:copied') == skopeo(
        'inspect', '--raw', '--tls-verify=false', f'{src}:v1')

    skopeo('delete', '--tls-verify=false', f'{dst}:copied')
    r = httpx.get(f'{registry.url}/v2/interop/skopeo/other/manifests/copied')
    assert r.status_code == 404
