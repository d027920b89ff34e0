"""The image-spec rules as the server applies them on manifest PUT (end-7), the
``strict`` setting, and digests of algorithms the registry cannot hash.

Ids follow schemas/README.md (``mNN`` MUSTs, ``s_N`` strict rules) and issue 12 §3.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from oci_ref.app import create_app
from oci_ref.config import Config
from tests.support import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    InProcess,
    assert_error,
    descriptor,
    push_blob,
)

MULTIHASH = 'multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8'
B64 = 'sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564'
BLAKE3 = 'blake3:' + 'a' * 64
NOT_HASHED_HERE = [MULTIHASH, B64, 'md5:' + 'a' * 32, BLAKE3]


def put(c: Any, name: str, reference: str, doc: Any, content_type: str = OCI_MANIFEST
        ) -> Any:
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return c.put(f'/v2/{name}/manifests/{reference}', content=raw,
                 headers={'Content-Type': content_type})


def pushed_image(c: Any, name: str) -> dict[str, Any]:
    """A manifest whose config and layer are in ``name``."""
    config = (b'{"architecture":"amd64","os":"linux",'
              b'"rootfs":{"type":"layers","diff_ids":[]}}')
    push_blob(c, name, config)
    push_blob(c, name, b'layer')
    return {'schemaVersion': 2, 'mediaType': OCI_MANIFEST,
            'config': descriptor(OCI_CONFIG, config),
            'layers': [descriptor(OCI_LAYER, b'layer')]}


def assert_nothing_stored(c: Any, name: str, tag: str = 'v1') -> None:
    r = c.get(f'/v2/{name}/manifests/{tag}')
    assert r.status_code == 404, r.content


# -- m04: unregistered digests are content the registry does not have ----------------


@pytest.mark.parametrize('unknown', NOT_HASHED_HERE)
@pytest.mark.parametrize('slot', ['config', 'layer'])
def test_m04_unregistered_digest_is_manifest_blob_unknown(client: Any, repo: str,
                                                          unknown: str, slot: str) -> None:
    doc = pushed_image(client, repo)
    target = doc['config'] if slot == 'config' else doc['layers'][0]
    target['digest'] = unknown
    r = put(client, repo, 'v1', doc)
    first = assert_error(r, 400, 'MANIFEST_BLOB_UNKNOWN')
    assert {e['code'] for e in r.json()['errors']} == {'MANIFEST_BLOB_UNKNOWN'}
    assert first['detail']['digest'] == unknown
    assert_nothing_stored(client, repo)


@pytest.mark.parametrize('unknown', [MULTIHASH, BLAKE3])
def test_m04_unregistered_index_child_is_manifest_blob_unknown(client: Any, repo: str,
                                                               unknown: str) -> None:
    doc = {'schemaVersion': 2, 'mediaType': OCI_INDEX,
           'manifests': [{'mediaType': OCI_MANIFEST, 'digest': unknown, 'size': 10}]}
    first = assert_error(put(client, repo, 'v1', doc, OCI_INDEX), 400,
                         'MANIFEST_BLOB_UNKNOWN')
    assert first['detail']['digest'] == unknown


@pytest.mark.parametrize('unknown', [MULTIHASH, B64, BLAKE3])
def test_m04_subject_with_an_unregistered_digest_is_never_checked(client: Any, repo: str,
                                                                  unknown: str) -> None:
    # distribution-spec §Push: a subject that does not exist MUST be accepted.
    doc = pushed_image(client, repo)
    doc['subject'] = {'mediaType': OCI_MANIFEST, 'digest': unknown, 'size': 7}
    r = put(client, repo, 'v1', doc)
    assert r.status_code == 201, r.content
    assert r.headers['oci-subject'] == unknown


# -- m01/m02: media types -------------------------------------------------------------


@pytest.mark.parametrize('value', ['invalid', ''])
@pytest.mark.parametrize('where', ['config', 'layer', 'manifest'])
def test_m01_m02_media_type_not_rfc6838_is_manifest_invalid(client: Any, repo: str,
                                                            value: str, where: str) -> None:
    doc = pushed_image(client, repo)
    if where == 'manifest':
        doc['mediaType'] = value
    else:
        (doc['config'] if where == 'config' else doc['layers'][0])['mediaType'] = value
    first = assert_error(put(client, repo, 'v1', doc), 400, 'MANIFEST_INVALID')
    assert 'RFC 6838' in first['detail']['rule'] and '§4.2' in first['detail']['spec']
    assert_nothing_stored(client, repo)


# -- issue 12 §3: lone surrogates, capped MANIFEST_BLOB_UNKNOWN ---------------------------


@pytest.mark.parametrize(('old', 'new', 'pointer'), [
    (b'"mediaType": "application/vnd.oci.image.manifest.v1+json"',
     b'"mediaType": "application/vnd.oci.image.manifest.v1+json", '
     b'"artifactType": "\\ud800"',
     '/artifactType'),
    (b'"mediaType": "application/vnd.oci.image.config.v1+json"',
     b'"mediaType": "\\ud800"', '/config/mediaType'),
    (b'"schemaVersion": 2', b'"schemaVersion": 2, "annotations": {"\\udfff": "x"}',
     '/annotations/\\udfff'),
    (b'"schemaVersion": 2', b'"schemaVersion": 2, "annotations": {"k.x": "\\udbff\\u0041"}',
     '/annotations/k.x'),
])
def test_lone_surrogate_is_manifest_invalid_not_500(client: Any, repo: str, old: bytes,
                                                    new: bytes, pointer: str) -> None:
    raw = json.dumps(pushed_image(client, repo)).encode()
    assert old in raw
    r = put(client, repo, 'v1', raw.replace(old, new, 1))
    first = assert_error(r, 400, 'MANIFEST_INVALID')
    assert first['detail']['path'] == pointer
    assert 'RFC 8259 §8.2' in first['detail']['spec']
    assert 'RFC 7493 §2.1' in first['detail']['spec']
    assert_nothing_stored(client, repo)


def test_manifest_blob_unknown_list_is_capped_and_says_how_many_were_left_out(
        client: Any, repo: str) -> None:
    doc = pushed_image(client, repo)
    doc['layers'] = [descriptor(OCI_LAYER, f'missing {i}'.encode()) for i in range(200)]
    r = put(client, repo, 'v1', doc)
    assert_error(r, 400, 'MANIFEST_BLOB_UNKNOWN')
    errors = r.json()['errors']
    assert len(errors) == 50
    wanted = [d['digest'] for d in doc['layers'][:50]]
    assert [e['detail']['digest'] for e in errors] == wanted
    assert '150 more' in errors[-1]['detail']['omitted']
    assert all('omitted' not in e['detail'] for e in errors[:-1])
    assert len(r.content) < 50_000


def test_manifest_blob_unknown_below_the_cap_lists_every_blob(client: Any, repo: str
                                                              ) -> None:
    doc = pushed_image(client, repo)
    doc['layers'] = [descriptor(OCI_LAYER, f'missing {i}'.encode()) for i in range(50)]
    errors = put(client, repo, 'v1', doc).json()['errors']
    assert len(errors) == 50 and all('omitted' not in e['detail'] for e in errors)


# -- URL digests of algorithms the registry does not hash: 4xx, never 500 ---------------


@pytest.mark.parametrize('unknown', NOT_HASHED_HERE)
def test_url_digest_of_an_unsupported_algorithm(client: Any, repo: str,
                                                unknown: str) -> None:
    """§Pushing blobs: an invalid digest or unsupported algorithm is a 400; pulls of
    content that cannot exist answer as the spec's endpoints allow."""
    push_blob(client, repo, b'present')
    cases = [
        ('GET', f'/v2/{repo}/blobs/{unknown}', 400, 'DIGEST_INVALID'),
        ('DELETE', f'/v2/{repo}/blobs/{unknown}', 400, 'DIGEST_INVALID'),
        ('POST', f'/v2/{repo}/blobs/uploads/?digest={unknown}', 400, 'DIGEST_INVALID'),
        ('PUT', f'/v2/{repo}/manifests/{unknown}', 400, 'DIGEST_INVALID'),
        ('GET', f'/v2/{repo}/manifests/{unknown}', 404, 'MANIFEST_UNKNOWN'),
        ('DELETE', f'/v2/{repo}/manifests/{unknown}', 400, 'DIGEST_INVALID'),
        ('GET', f'/v2/{repo}/referrers/{unknown}', 400, 'DIGEST_INVALID'),
    ]
    for method, path, status, code in cases:
        r = client.request(method, path.replace('+', '%2B'), content=b'x')
        assert_error(r, status, code)
    r = client.head(f'/v2/{repo}/blobs/{unknown}'.replace('+', '%2B'))
    assert r.status_code == 400
    r = client.post(f'/v2/{repo}/blobs/uploads/')
    r = client.put(f'{r.headers["location"]}?digest={unknown.replace("+", "%2B")}',
                   content=b'present')
    first = assert_error(r, 400, 'DIGEST_INVALID')
    assert 'unsupported algorithm' in first['detail']['rule']
    # A mount that cannot be done falls back to an upload session (§Mounting a blob).
    r = client.post(f'/v2/{repo}/blobs/uploads/?mount={unknown.replace("+", "%2B")}'
                    f'&from={repo}')
    assert r.status_code == 202, r.content


def test_digest_algorithm_parameter_for_an_unsupported_algorithm(client: Any, repo: str
                                                                 ) -> None:
    r = client.post(f'/v2/{repo}/blobs/uploads/?digest-algorithm=blake3')
    first = assert_error(r, 400, 'DIGEST_INVALID')
    assert 'sha256' in first['detail']['rule']


# -- strict -------------------------------------------------------------------------------


@pytest.fixture
def strict_client(tmp_path: Path) -> InProcess:
    return InProcess(create_app(Config(root=tmp_path / 'strict', strict=True)))


def test_strict_server_refuses_a_should_the_default_accepts(
        client: Any, strict_client: Any, repo: str) -> None:
    for c in (client, strict_client):
        doc = pushed_image(c, repo)
        doc['layers'] = []
        r = put(c, repo, 'v1', doc)
        if c is client:
            assert r.status_code == 201, r.content
            continue
        first = assert_error(r, 400, 'MANIFEST_INVALID')
        assert first['detail']['rule'].startswith('S-2')
        assert first['detail']['mode'] == 'strict'
        assert 'manifest.md' in first['detail']['spec']
        assert_nothing_stored(c, repo)


def test_strict_server_accepts_a_manifest_that_keeps_the_shoulds(strict_client: Any,
                                                                 repo: str) -> None:
    doc = pushed_image(strict_client, repo)
    doc['annotations'] = {'org.opencontainers.image.created': '2024-01-01T00:00:00Z'}
    r = put(strict_client, repo, 'v1', doc)
    assert r.status_code == 201, r.content


def test_strict_server_still_reports_musts_first(strict_client: Any, repo: str) -> None:
    doc = pushed_image(strict_client, repo)
    doc['layers'] = []
    doc['schemaVersion'] = 3
    errors = assert_error(put(strict_client, repo, 'v1', doc), 400, 'MANIFEST_INVALID')
    assert errors['detail']['path'] == '/schemaVersion'


def test_strict_judges_large_manifests_too(strict_client: Any, repo: str) -> None:
    # Over 64 KiB the strict check runs in a thread, like the default one.
    doc = pushed_image(strict_client, repo)
    doc['annotations'] = {f'com.example.k{i}': 'x' * 100 for i in range(1000)}
    doc['annotations']['plain'] = 'not reverse-domain'
    assert len(json.dumps(doc)) > 64 * 1024
    first = assert_error(put(strict_client, repo, 'v1', doc), 400, 'MANIFEST_INVALID')
    assert first['detail']['path'] == '/annotations/plain'
