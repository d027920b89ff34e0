"""Optional behaviours the suites test both ways: sparse manifests, automatic mount.

spec §Pushing Manifests: a registry MAY reject a manifest whose descriptors reference
content it does not have (oci-ref does, by default); ``sparse_manifests`` accepts it,
the content is then simply absent and fsck notes it without failing. spec §Mounting a
blob: without ``from`` a registry MAY mount from any repository (``automatic_mount``,
on by default); off, such a mount is a normal upload (202).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from oci_ref.app import create_app, open_registry
from oci_ref.config import Config
from oci_ref.gc import fsck
from tests.support import (
    OCI_MANIFEST,
    InProcess,
    assert_error,
    digest,
    image_manifest,
    push_blob,
)

OCI_INDEX = 'application/vnd.oci.image.index.v1+json'
CONFIG = json.dumps({'architecture': 'amd64', 'os': 'linux',
                     'rootfs': {'type': 'layers', 'diff_ids': []}}).encode()
LAYERS = [b'sparse layer one', b'sparse layer two']


def app(tmp_path: Path, **settings: object) -> InProcess:
    return InProcess(create_app(Config(root=tmp_path / 'data', **settings)))


def run_fsck(tmp_path: Path) -> list:
    registry = open_registry(Config(root=tmp_path / 'data'))
    try:
        return asyncio.run(fsck(registry))
    finally:
        registry.close()


def put(c: InProcess, name: str, reference: str, body: bytes, media_type: str) -> object:
    return c.put(f'/v2/{name}/manifests/{reference}', content=body,
                 headers={'Content-Type': media_type})


def index_of(*manifests: bytes) -> bytes:
    return json.dumps({'schemaVersion': 2, 'mediaType': OCI_INDEX, 'manifests': [
        {'mediaType': OCI_MANIFEST, 'digest': digest(m), 'size': len(m),
         'platform': {'architecture': 'amd64', 'os': 'linux'}} for m in manifests]}
    ).encode()


def test_by_default_a_manifest_with_absent_layers_is_refused(tmp_path):
    c = app(tmp_path)
    push_blob(c, 'a/b', CONFIG)
    body = image_manifest(CONFIG, LAYERS)
    assert_error(put(c, 'a/b', 'v1', body, OCI_MANIFEST), 400, 'MANIFEST_BLOB_UNKNOWN')
    assert_error(put(c, 'a/b', 'i1', index_of(body), OCI_INDEX), 400,
                 'MANIFEST_BLOB_UNKNOWN')
    assert c.get('/v2/a/b/manifests/v1').status_code == 404


@pytest.mark.parametrize('with_config', [True, False], ids=['config-pushed', 'nothing'])
def test_sparse_image_and_index_are_served_and_fsck_notes_the_absent_content(
        tmp_path, with_config):
    c = app(tmp_path, sparse_manifests=True)
    if with_config:
        push_blob(c, 'a/b', CONFIG)
    image = image_manifest(CONFIG, LAYERS)
    r = put(c, 'a/b', 'v1', image, OCI_MANIFEST)
    assert r.status_code == 201, r.content
    assert r.headers['docker-content-digest'] == digest(image)
    # An index whose child manifest is absent too.
    absent_child = image_manifest(CONFIG, [b'never pushed'])
    index = index_of(image, absent_child)
    assert put(c, 'a/b', 'multi', index, OCI_INDEX).status_code == 201
    for reference, body in (('v1', image), ('multi', index), (digest(index), index)):
        got = c.get(f'/v2/a/b/manifests/{reference}')
        assert got.status_code == 200 and got.content == body, reference
    for layer in LAYERS:
        assert c.head(f'/v2/a/b/blobs/{digest(layer)}').status_code == 404
    problems = run_fsck(tmp_path)
    absent = {*map(digest, LAYERS), digest(absent_child)} | (
        set() if with_config else {digest(CONFIG)})
    assert {p.kind for p in problems} == {'reference-missing'}
    assert not any(p.serious for p in problems)
    assert {p.detail.split()[1].rstrip(',') for p in problems} == absent
    # The content may arrive later; then nothing is absent.
    for blob in (CONFIG, *LAYERS, b'never pushed'):
        push_blob(c, 'a/b', blob)
    assert put(c, 'a/b', 'child', absent_child, OCI_MANIFEST).status_code == 201
    assert run_fsck(tmp_path) == []


def test_sparse_manifests_still_validate_the_manifest_itself(tmp_path):
    c = app(tmp_path, sparse_manifests=True)
    bad = json.dumps({'schemaVersion': 2, 'mediaType': OCI_MANIFEST,
                      'config': {'mediaType': 'application/json', 'digest': 'nope',
                                 'size': 1}, 'layers': []}).encode()
    assert_error(put(c, 'a/b', 'v1', bad, OCI_MANIFEST), 400, 'MANIFEST_INVALID')


@pytest.mark.parametrize('automatic', [True, False], ids=['on', 'off'])
def test_automatic_mount_switch_governs_only_mounts_without_from(tmp_path, automatic):
    c = app(tmp_path, automatic_mount=automatic)
    d = push_blob(c, 'src/repo', b'mount me')
    r = c.post(f'/v2/dst/one/blobs/uploads/?mount={d}')
    assert r.status_code == (201 if automatic else 202), r.content
    if not automatic:
        assert '/v2/dst/one/blobs/uploads/' in r.headers['location']
        assert c.head(f'/v2/dst/one/blobs/{d}').status_code == 404
    r = c.post(f'/v2/dst/two/blobs/uploads/?mount={d}&from=src/repo')
    assert r.status_code == 201, r.content


def test_the_switches_are_settings_like_the_others(tmp_path):
    config = Config.load(environ={'OCI_REF_SPARSE_MANIFESTS': 'true',
                                  'OCI_REF_AUTOMATIC_MOUNT': 'off'})
    assert config.sparse_manifests is True and config.automatic_mount is False
    defaults = Config.load(environ={})
    assert defaults.sparse_manifests is False and defaults.automatic_mount is True
