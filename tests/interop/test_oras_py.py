"""oras-py (the Python ORAS client, in its own venv under /opt/oci-clients/py)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import httpx
import pytest

from tests.interop.conftest import find_client
from tests.interop.layout import OCI_MANIFEST
from tests.interop.util import (
    Registry,
    host,
    log_mark,
    log_since,
    manifest_status,
    resolve,
    run,
    served,
    sha256,
    tags,
)

pytestmark = [pytest.mark.interop, pytest.mark.oras_py]

DRIVER = Path(__file__).with_name('oraspy_driver.py')
CHUNK = 1 << 20


def test_oras_py_push_pull_tags_chunked_upload(registry: Registry, workdir: Path,
                                               repo: str) -> None:
    """push, pull, tags (with n), chunked upload, get_manifest, delete_tags"""
    python = find_client('oras-py')
    (workdir / 'hello.txt').write_text(f'hello from oras-py {repo}\n')
    (workdir / 'data.json').write_text('{"answer": 42}\n')
    big = os.urandom(3 * CHUNK + 12345)
    (workdir / 'big.bin').write_bytes(big)
    (workdir / 'doomed.txt').write_text('deleted again\n')

    mark = log_mark(registry)
    done = run([python, str(DRIVER), host(registry), repo, str(workdir), str(CHUNK)],
               registry=registry, env={'HOME': str(workdir)})
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    log = log_since(registry, mark)

    assert seen['push']['status'] == 201
    digest = seen['push']['digest']
    manifest = served(registry, repo, digest, OCI_MANIFEST)
    assert manifest['annotations']['org.example.test'] == 'oras-py'
    assert seen['manifest'] == manifest

    # The big blob went up in 4 PATCHes (3 full chunks and a tail), then one PUT.
    assert seen['push_chunked']['status'] == 201
    chunked = served(registry, repo, seen['push_chunked']['digest'], OCI_MANIFEST)
    assert chunked['layers'][0]['digest'] == sha256(big)
    r = httpx.get(f'{registry.url}/v2/{repo}/blobs/{sha256(big)}', timeout=60)
    assert r.status_code == 200
    assert r.headers['docker-content-digest'] == sha256(big)
    assert r.content == big
    assert len(re.findall(r'"PATCH /v2/[^ ]*/blobs/uploads/', log)) >= 4, log

    assert seen['pull'] == ['data.json', 'hello.txt']
    assert (workdir / 'out' / 'hello.txt').read_text() == f'hello from oras-py {repo}\n'
    assert seen['pull_chunked'] == ['big.bin']
    assert (workdir / 'out-chunked' / 'big.bin').read_bytes() == big

    assert sorted(seen['tags']) == ['chunked', 'v1']
    assert seen['tags_n1'] == ['chunked'], (
        'tags/list?n=1 must give the first tag in lexical order', seen['tags'])
    assert seen['push_doomed']['status'] == 201
    assert seen['deleted'] == ['doomed']
    assert sorted(seen['tags_after_delete']) == ['chunked', 'v1'] == tags(registry, repo)
    assert manifest_status(registry, repo, seen['push_doomed']['digest']) == 404


def test_oras_py_tags_follow_link_pages(paged_registry: Registry, workdir: Path,
                                        repo: str) -> None:
    """tags across pages (Link headers, 2 tags per page)"""
    python = find_client('oras-py')
    (workdir / 'hello.txt').write_text(f'paged {repo}\n')
    done = run([python, str(DRIVER), host(paged_registry), repo, str(workdir), str(CHUNK),
                'paged'], registry=paged_registry, env={'HOME': str(workdir)})
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen['tags'] == ['a', 'b', 'c', 'v1'], ('tags in ASCII order, all pages',
                                                  seen['tags'])
    assert seen['tags'] == tags(paged_registry, repo)
    for tag in seen['tags']:
        served(paged_registry, repo, resolve(paged_registry, repo, tag), OCI_MANIFEST)
