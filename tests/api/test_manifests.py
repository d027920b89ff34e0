"""Manifests: pull (end-3), push (end-7), delete (end-9) and the PUT validation rules.

Each test is named after the rule it proves: ``rNN`` are the distribution-spec rules of
registry-checklist §1, ``s2_N`` the manifest PUT rules of checklist §2, ``legacy``/``new``
the conformance suites' expectations of checklist §3.11.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from oci_ref.app import create_app
from oci_ref.config import Config
from tests.support import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    EMPTY_JSON,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    SPEC_CODES,
    InProcess,
    assert_error,
    descriptor,
    digest,
    image_manifest,
    push_blob,
    push_image,
)

MIB = 1024 * 1024
DOCKER_CONFIG = 'application/vnd.docker.container.image.v1+json'
DOCKER_LAYER = 'application/vnd.docker.image.rootfs.diff.tar.gzip'
DOCKER_FOREIGN = 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip'
OCI_NONDIST_GZIP = 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip'
OCI_NONDIST_TAR = 'application/vnd.oci.image.layer.nondistributable.v1.tar'


# -- helpers -----------------------------------------------------------------------


def put(c: Any, name: str, reference: str, body: bytes,
        content_type: str | None = OCI_MANIFEST) -> Any:
    headers = {'Content-Type': content_type} if content_type is not None else {}
    return c.put(f'/v2/{name}/manifests/{reference}', content=body, headers=headers)


def put_ok(c: Any, name: str, reference: str, body: bytes,
           content_type: str | None = OCI_MANIFEST) -> Any:
    r = put(c, name, reference, body, content_type)
    assert r.status_code == 201, (r.status_code, r.content[:1000])
    return r


def blobs(c: Any, name: str, seed: str) -> tuple[bytes, bytes]:
    """Push a config and a layer; return their bytes."""
    config = json.dumps({'architecture': 'amd64', 'os': 'linux', 'seed': seed,
                         'rootfs': {'type': 'layers', 'diff_ids': []}}).encode()
    layer = f'layer bytes {seed}'.encode()
    push_blob(c, name, config)
    push_blob(c, name, layer)
    return config, layer


def manifest_doc(config: bytes, layers: list[bytes], **extra: Any) -> dict[str, Any]:
    return json.loads(image_manifest(config, layers, **extra))


def dumps(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def index_doc(children: list[dict[str, Any]], media_type: str = OCI_INDEX,
              **extra: Any) -> dict[str, Any]:
    return {'schemaVersion': 2, 'mediaType': media_type, 'manifests': children, **extra}


def manifest_descriptor(body: bytes, media_type: str = OCI_MANIFEST,
                        algorithm: str = 'sha256', **extra: Any) -> dict[str, Any]:
    return {'mediaType': media_type, 'digest': digest(body, algorithm),
            'size': len(body), **extra}


def docker_manifest(c: Any, name: str, seed: str) -> bytes:
    config, layer = blobs(c, name, seed)
    return dumps({
        'schemaVersion': 2,
        'mediaType': DOCKER_MANIFEST,
        'config': descriptor(DOCKER_CONFIG, config),
        'layers': [descriptor(DOCKER_LAYER, layer)],
    })


def error_codes(r: Any) -> list[str]:
    return [e['code'] for e in r.json()['errors']]


def padded_manifest(config: bytes, total: int) -> bytes:
    """An image manifest of exactly ``total`` bytes, padded with one big annotation
    (the new suite's "large-manifest" is ~3.9 MB of annotations)."""
    def build(pad: int) -> bytes:
        return image_manifest(config, [], annotations={'org.example.pad': 'x' * pad})
    body = build(0)
    body = build(total - len(body))
    assert len(body) == total
    return body


# -- §1.1 / §1.2 Pull --------------------------------------------------------------


def test_r03_r12_get_manifest_by_tag_is_200_with_the_bytes(client, repo):
    d, body = push_image(client, repo, 'v1')
    r = client.get(f'/v2/{repo}/manifests/v1')
    assert r.status_code == 200
    assert r.content == body
    assert r.headers['docker-content-digest'] == d


def test_r06_get_manifest_by_sha256_digest(client, repo):
    d, body = push_image(client, repo, 'v1')
    assert d.startswith('sha256:')
    r = client.get(f'/v2/{repo}/manifests/{d}')
    assert r.status_code == 200
    assert r.content == body
    assert r.headers['docker-content-digest'] == d


def test_r06_get_manifest_by_sha512_digest(client, repo):
    config, layer = blobs(client, repo, 's512')
    body = image_manifest(config, [layer])
    d512 = digest(body, 'sha512')
    r = put_ok(client, repo, d512, body)
    assert r.headers['docker-content-digest'] == d512
    r = client.get(f'/v2/{repo}/manifests/{d512}')
    assert r.status_code == 200
    assert r.content == body
    assert r.headers['docker-content-digest'] == d512
    r = client.head(f'/v2/{repo}/manifests/{d512}')
    assert r.status_code == 200
    assert r.headers['docker-content-digest'] == d512
    assert r.headers['content-length'] == str(len(body))


def test_r09_tag_of_128_characters_is_accepted_and_pullable(client, repo):
    tag = 'T' + 'a' * 126 + '_'
    assert len(tag) == 128
    _, body = push_image(client, repo, tag)
    r = client.get(f'/v2/{repo}/manifests/{tag}')
    assert r.status_code == 200
    assert r.content == body
    assert tag in client.get(f'/v2/{repo}/tags/list').json()['tags']


def test_r09_tag_of_129_characters_is_400_on_put_and_404_on_get(client, repo):
    push_image(client, repo, 'v1')
    config, layer = blobs(client, repo, 'long')
    tag = 'a' * 129
    r = put(client, repo, tag, image_manifest(config, [layer]))
    assert_error(r, 400, 'MANIFEST_INVALID')
    assert_error(client.get(f'/v2/{repo}/manifests/{tag}'), 404, 'MANIFEST_UNKNOWN')


def test_r09_tags_are_case_sensitive(client, repo):
    lower, lower_body = push_image(client, repo, 'latest', seed='lower')
    upper, upper_body = push_image(client, repo, 'LATEST', seed='upper')
    assert lower != upper
    assert client.get(f'/v2/{repo}/manifests/latest').content == lower_body
    assert client.get(f'/v2/{repo}/manifests/LATEST').content == upper_body
    assert_error(client.get(f'/v2/{repo}/manifests/Latest'), 404, 'MANIFEST_UNKNOWN')


def test_r10_manifest_content_type_has_no_parameters(client, repo):
    push_image(client, repo, 'v1')
    for r in (client.get(f'/v2/{repo}/manifests/v1'),
              client.head(f'/v2/{repo}/manifests/v1')):
        assert r.status_code == 200
        assert ';' not in r.headers['content-type']
        assert r.headers['content-type'] == OCI_MANIFEST


@pytest.mark.parametrize('kind', ['oci-manifest', 'oci-index', 'docker-manifest',
                                  'docker-list'])
def test_r11_content_type_served_back_exactly_as_pushed(client, repo, kind):
    if kind in ('oci-manifest', 'docker-manifest'):
        if kind == 'oci-manifest':
            config, layer = blobs(client, repo, kind)
            body, media_type = image_manifest(config, [layer]), OCI_MANIFEST
        else:
            body, media_type = docker_manifest(client, repo, kind), DOCKER_MANIFEST
    else:
        child = docker_manifest(client, repo, kind)
        put_ok(client, repo, digest(child), child, DOCKER_MANIFEST)
        media_type = OCI_INDEX if kind == 'oci-index' else DOCKER_LIST
        body = dumps(index_doc(
            [manifest_descriptor(child, DOCKER_MANIFEST,
                                 platform={'architecture': 'amd64', 'os': 'linux'})],
            media_type,
        ))
    put_ok(client, repo, 'v1', body, media_type)
    for ref in ('v1', digest(body)):
        r = client.get(f'/v2/{repo}/manifests/{ref}')
        assert r.status_code == 200
        assert r.headers['content-type'] == media_type
        assert r.content == body
        h = client.head(f'/v2/{repo}/manifests/{ref}')
        assert h.status_code == 200
        assert h.headers['content-type'] == media_type


def test_r13_get_carries_docker_content_digest_of_the_body(client, repo):
    push_image(client, repo, 'v1')
    r = client.get(f'/v2/{repo}/manifests/v1')
    assert r.status_code == 200
    assert r.headers['docker-content-digest'] == digest(r.content)


def test_r14_unknown_manifest_is_404_manifest_unknown(client, repo):
    push_image(client, repo, 'v1')
    assert_error(client.get(f'/v2/{repo}/manifests/nope'), 404, 'MANIFEST_UNKNOWN')
    missing = digest(b'never pushed')
    assert_error(client.get(f'/v2/{repo}/manifests/{missing}'), 404, 'MANIFEST_UNKNOWN')
    missing512 = digest(b'never pushed', 'sha512')
    assert_error(client.get(f'/v2/{repo}/manifests/{missing512}'), 404,
                 'MANIFEST_UNKNOWN')


def test_r14_manifest_of_another_repository_is_404(client, repo):
    d, _ = push_image(client, repo, 'v1')
    other = f'{repo}/nested'
    push_image(client, other, 'other', seed='other')
    assert_error(client.get(f'/v2/{other}/manifests/{d}'), 404, 'MANIFEST_UNKNOWN')
    assert_error(client.get(f'/v2/{other}/manifests/v1'), 404, 'MANIFEST_UNKNOWN')
    assert client.get(f'/v2/{other}/tags/list').json()['tags'] == ['other']
    assert client.get(f'/v2/{repo}/tags/list').json()['tags'] == ['v1']


def test_r15_r17_blobs_of_a_pulled_manifest_are_200_with_digest_header(client, repo):
    push_image(client, repo, 'v1', seed='pull')
    manifest = client.get(f'/v2/{repo}/manifests/v1').json()
    for desc in (manifest['config'], *manifest['layers']):
        r = client.get(f'/v2/{repo}/blobs/{desc["digest"]}')
        assert r.status_code == 200
        assert len(r.content) == desc['size']
        assert digest(r.content) == desc['digest']
        assert r.headers['docker-content-digest'] == desc['digest']
        assert r.headers['content-length'] == str(desc['size'])


def test_r16_unknown_blob_is_404_blob_unknown(client, repo):
    push_image(client, repo, 'v1')
    missing = digest(b'no such blob')
    assert_error(client.get(f'/v2/{repo}/blobs/{missing}'), 404, 'BLOB_UNKNOWN')
    assert client.head(f'/v2/{repo}/blobs/{missing}').status_code == 404


def test_r18_blob_range_request_is_honoured(client, repo):
    data = b'0123456789abcdef'
    d = push_blob(client, repo, data)
    r = client.get(f'/v2/{repo}/blobs/{d}', headers={'Range': 'bytes=2-5'})
    assert r.status_code == 206
    assert r.content == b'2345'
    assert r.headers['content-range'] == f'bytes 2-5/{len(data)}'


@pytest.mark.parametrize('by', ['tag', 'digest'])
def test_r19_r21_head_manifest_has_length_digest_type_and_no_body(client, repo, by):
    d, body = push_image(client, repo, 'v1')
    ref = 'v1' if by == 'tag' else d
    r = client.head(f'/v2/{repo}/manifests/{ref}')
    assert r.status_code == 200
    assert r.content == b''
    assert r.headers['content-length'] == str(len(body))
    assert r.headers['docker-content-digest'] == d
    assert r.headers['content-type'] == OCI_MANIFEST


def test_r19_r21_head_blob_has_length_and_digest(client, repo):
    data = b'a blob for HEAD'
    d = push_blob(client, repo, data)
    r = client.head(f'/v2/{repo}/blobs/{d}')
    assert r.status_code == 200
    assert r.content == b''
    assert r.headers['content-length'] == str(len(data))
    assert r.headers['docker-content-digest'] == d


def test_r20_head_missing_manifest_is_404_without_body(client, repo):
    push_image(client, repo, 'v1')
    for ref in ('missing', digest(b'missing manifest')):
        r = client.head(f'/v2/{repo}/manifests/{ref}')
        assert r.status_code == 404
        assert r.content == b''


def test_s5_etag_when_present_is_the_quoted_digest(client, repo):
    d, _ = push_image(client, repo, 'v1')
    for r in (client.get(f'/v2/{repo}/manifests/v1'),
              client.head(f'/v2/{repo}/manifests/v1')):
        etag = r.headers.get('etag')
        assert etag is None or etag == f'"{d}"'


@pytest.mark.parametrize('method', ['GET', 'HEAD', 'DELETE'])
def test_legacy_invalid_tag_is_404_on_get_head_delete(client, repo, method):
    push_image(client, repo, 'v1')
    r = client.request(method, f'/v2/{repo}/manifests/.INVALID_MANIFEST_NAME')
    assert r.status_code == 404
    if method != 'HEAD':
        assert_error(r, 404, 'MANIFEST_UNKNOWN')


def test_legacy_get_invalid_tag_is_404(client, repo):
    push_image(client, repo, 'v1')
    assert_error(client.get(f'/v2/{repo}/manifests/.INVALID_MANIFEST_NAME'), 404,
                 'MANIFEST_UNKNOWN')


def test_end3_get_malformed_digest_is_404_naming_the_rule(client, repo):
    """end-3 lists only 404 as a failure: a malformed digest names no manifest. (The
    v1.1.1 suite allows 400 too, but its client cannot decode an object `detail` on a
    400, so 404 is also the answer that suite can read.)"""
    push_image(client, repo, 'v1')
    for reference in ('sha256:totallywrong', 'sha256:' + 'A' * 64, 'md5:' + 'a' * 32):
        error = assert_error(client.get(f'/v2/{repo}/manifests/{reference}'), 404,
                             'MANIFEST_UNKNOWN')
        assert 'digest' in error['detail']['rule'] or 'algorithm' in error['detail']['rule']
        assert error['detail']['spec']
        r = client.head(f'/v2/{repo}/manifests/{reference}')
        assert r.status_code == 404 and r.content == b''


def test_never_404_or_406_because_of_accept_docker_only(client, repo):
    d, body = push_image(client, repo, 'v1')
    for accept in (DOCKER_MANIFEST, f'{DOCKER_MANIFEST}, {DOCKER_LIST}', 'text/html',
                   'application/vnd.docker.distribution.manifest.v1+prettyjws'):
        for method in ('GET', 'HEAD'):
            r = client.request(method, f'/v2/{repo}/manifests/v1',
                               headers={'Accept': accept})
            assert r.status_code == 200, (accept, method, r.status_code)
            assert r.headers['content-type'] == OCI_MANIFEST
            assert r.headers['docker-content-digest'] == d
    r = client.get(f'/v2/{repo}/manifests/{d}', headers={'Accept': DOCKER_MANIFEST})
    assert r.status_code == 200
    assert r.content == body


def test_never_404_or_406_because_of_several_accept_lines(client, repo):
    d, body = push_image(client, repo, 'v1')
    lines = [('Accept', DOCKER_MANIFEST), ('Accept', DOCKER_LIST),
             ('Accept', OCI_INDEX), ('Accept', f'{OCI_MANIFEST};q=0.5')]
    r = client.request('GET', f'/v2/{repo}/manifests/v1', headers=lines)
    assert r.status_code == 200
    assert r.content == body
    assert r.headers['content-type'] == OCI_MANIFEST
    r = client.request('HEAD', f'/v2/{repo}/manifests/{d}', headers=lines[:2])
    assert r.status_code == 200
    assert r.headers['content-length'] == str(len(body))


def test_r73_unknown_query_parameters_such_as_ns_are_ignored(client, repo):
    d, body = push_image(client, repo, 'v1')
    r = client.get(f'/v2/{repo}/manifests/v1?ns=docker.io&_state=x')
    assert r.status_code == 200
    assert r.content == body
    assert client.head(f'/v2/{repo}/manifests/{d}?ns=docker.io').status_code == 200


# -- §1.3 / §1.7 Push ---------------------------------------------------------------


def test_r22_subject_that_does_not_exist_is_accepted(client, repo):
    config, layer = blobs(client, repo, 'ref')
    subject = manifest_descriptor(b'a subject that was never pushed')
    body = image_manifest(config, [layer], subject=subject)
    r = put_ok(client, repo, digest(body), body)
    assert r.headers['oci-subject'] == subject['digest']
    assert client.get(f'/v2/{repo}/manifests/{digest(body)}').content == body


def test_r23_missing_config_and_layers_give_one_manifest_blob_unknown_each(client, repo):
    _, layer = blobs(client, repo, 'present')
    missing_config = b'{"missing": "config"}'
    missing_layers = [b'missing layer one', b'missing layer two']
    body = image_manifest(missing_config, [layer, *missing_layers])
    r = put(client, repo, 'v1', body)
    assert_error(r, 400, 'MANIFEST_BLOB_UNKNOWN')
    errors = r.json()['errors']
    assert [e['code'] for e in errors] == ['MANIFEST_BLOB_UNKNOWN'] * 3
    named = [json.dumps(e.get('detail')) for e in errors]
    wanted = [digest(missing_config), *map(digest, missing_layers)]
    for d in wanted:
        assert sum(d in text for text in named) == 1, (d, named)
    assert not any(digest(layer) in text for text in named)
    assert_error(client.get(f'/v2/{repo}/manifests/v1'), 404, 'MANIFEST_UNKNOWN')


def test_r23_same_missing_digest_twice_is_reported_once(client, repo):
    config, _ = blobs(client, repo, 'dup')
    missing = b'twice missing'
    body = image_manifest(config, [missing, missing])
    r = put(client, repo, 'v1', body)
    assert_error(r, 400, 'MANIFEST_BLOB_UNKNOWN')
    assert error_codes(r) == ['MANIFEST_BLOB_UNKNOWN']
    assert digest(missing) in json.dumps(r.json()['errors'][0].get('detail'))


@pytest.mark.parametrize('content_type', [
    f'{OCI_MANIFEST}; charset=utf-8',
    f'{OCI_MANIFEST};charset=UTF-8',
    f'{OCI_MANIFEST} ; foo="bar"',
])
def test_r44_content_type_parameters_ignored_on_put(client, repo, content_type):
    config, layer = blobs(client, repo, 'params')
    body = image_manifest(config, [layer])
    put_ok(client, repo, 'v1', body, content_type)
    r = client.get(f'/v2/{repo}/manifests/v1')
    assert r.status_code == 200
    assert r.headers['content-type'] == OCI_MANIFEST
    assert r.content == body


def test_r45_manifest_stored_byte_for_byte(client, repo):
    config, layer = blobs(client, repo, 'bytes')
    doc = manifest_doc(config, [layer],
                       annotations={'org.example.note': 'caf\u00e9 \u2603'})
    # Unusual but valid JSON: tabs, CRLF, reordered keys, escapes, trailing newline.
    body = ('{\r\n\t"layers" : ' + json.dumps(doc['layers'], indent=3) + ',\r\n'
            '\t"config":' + json.dumps(doc['config']) + ' ,\n'
            '  "annotations": {"org.example.note": "caf\\u00e9 \u2603"},'
            '"mediaType":"' + OCI_MANIFEST + '", "schemaVersion":2}\n\n').encode()
    r = put_ok(client, repo, 'v1', body)
    assert r.headers['docker-content-digest'] == digest(body)
    for ref in ('v1', digest(body)):
        got = client.get(f'/v2/{repo}/manifests/{ref}')
        assert got.content == body
        assert got.headers['content-length'] == str(len(body))


def test_r46_put_is_201_with_location_that_pulls_identical_bytes(client, repo):
    config, layer = blobs(client, repo, 'loc')
    body = image_manifest(config, [layer])
    r = put_ok(client, repo, 'v1', body)
    location = r.headers['location']
    assert location.endswith(f'/v2/{repo}/manifests/{digest(body)}')
    path = location[location.index('/v2/'):]
    got = client.get(path, headers={'Accept': OCI_MANIFEST})
    assert got.status_code == 200
    assert got.content == body
    assert got.headers['content-type'] == OCI_MANIFEST
    assert got.headers['content-length'] == str(len(body))


@pytest.mark.parametrize('algorithm', ['sha256', 'sha512'])
def test_r47_put_by_digest_returns_that_digest(client, repo, algorithm):
    config, layer = blobs(client, repo, algorithm)
    body = image_manifest(config, [layer])
    d = digest(body, algorithm)
    r = put_ok(client, repo, d, body)
    assert r.headers['docker-content-digest'] == d
    assert r.headers['location'].endswith(f'/manifests/{d}')
    got = client.get(f'/v2/{repo}/manifests/{d}')
    assert got.status_code == 200
    assert got.content == body


def test_r47_put_by_tag_returns_the_sha256_digest(client, repo):
    config, layer = blobs(client, repo, 'tagdigest')
    body = image_manifest(config, [layer])
    r = put_ok(client, repo, 'v1', body)
    assert r.headers['docker-content-digest'] == digest(body)
    assert r.headers['location'].endswith(f'/manifests/{digest(body)}')


def _oci_tags(r: Any) -> list[str]:
    return [t.strip() for t in r.headers['oci-tag'].split(',') if t.strip()]


def test_r48_tag_query_params_on_digest_put_set_every_tag(client, repo):
    config, layer = blobs(client, repo, 'tags')
    body = image_manifest(config, [layer])
    d = digest(body)
    r = put_ok(client, repo, f'{d}?tag=a&tag=b', body)
    assert r.headers['docker-content-digest'] == d
    assert sorted(_oci_tags(r)) == ['a', 'b']
    for tag in ('a', 'b'):
        got = client.get(f'/v2/{repo}/manifests/{tag}')
        assert got.status_code == 200
        assert got.content == body
        assert got.headers['docker-content-digest'] == d
    assert client.get(f'/v2/{repo}/tags/list').json()['tags'] == ['a', 'b']


def test_r48_accepts_at_least_ten_tag_params(client, repo):
    config, layer = blobs(client, repo, 'ten')
    body = image_manifest(config, [layer])
    tags = [f't{i:02d}' for i in range(12)]
    query = '&'.join(f'tag={t}' for t in tags)
    r = put_ok(client, repo, f'{digest(body)}?{query}', body)
    assert sorted(_oci_tags(r)) == tags
    assert client.get(f'/v2/{repo}/tags/list').json()['tags'] == tags


def test_r48_too_many_tag_params_is_414(client, repo):
    config, layer = blobs(client, repo, 'many')
    body = image_manifest(config, [layer])
    query = '&'.join(f'tag=t{i}' for i in range(1000))
    r = put(client, repo, f'{digest(body)}?{query}', body)
    assert r.status_code == 414
    assert r.json()['errors'][0]['code'] in SPEC_CODES
    assert client.get(f'/v2/{repo}/manifests/t1').status_code == 404


def test_r48_invalid_tag_param_is_400_and_nothing_is_stored(client, repo):
    config, layer = blobs(client, repo, 'badtag')
    body = image_manifest(config, [layer])
    r = put(client, repo, f'{digest(body)}?tag=ok&tag=-bad', body)
    assert r.status_code == 400
    assert r.json()['errors'][0]['code'] in SPEC_CODES
    assert client.get(f'/v2/{repo}/manifests/ok').status_code == 404
    assert client.get(f'/v2/{repo}/manifests/{digest(body)}').status_code == 404


def test_r49_pulling_from_a_repository_that_does_not_exist_is_404(client, repo):
    for ref in ('latest', digest(b'anything')):
        assert_error(client.get(f'/v2/{repo}/manifests/{ref}'), 404, 'NAME_UNKNOWN')
        assert client.head(f'/v2/{repo}/manifests/{ref}').status_code == 404
    assert_error(client.get(f'/v2/{repo}/blobs/{digest(b"x")}'), 404, 'BLOB_UNKNOWN')


def test_r50_four_mib_manifest_is_accepted(client, repo):
    config = b'{"architecture": "amd64", "os": "linux"}'
    push_blob(client, repo, config)
    body = padded_manifest(config, 4 * MIB)
    r = put_ok(client, repo, 'big', body)
    assert r.headers['docker-content-digest'] == digest(body)
    got = client.get(f'/v2/{repo}/manifests/big')
    assert got.status_code == 200
    assert got.content == body
    assert got.headers['content-length'] == str(4 * MIB)


def test_r50_new_suite_large_manifest_of_3_9_mb_annotations_is_accepted(client, repo):
    config = b'{"architecture": "amd64", "os": "linux"}'
    push_blob(client, repo, config)
    annotations = {f'org.example.{i:05d}': 'v' * 1000 for i in range(3900)}
    body = image_manifest(config, [], annotations=annotations)
    assert 3_900_000 < len(body) <= 4 * MIB
    d = digest(body)
    put_ok(client, repo, d, body)
    assert client.get(f'/v2/{repo}/manifests/{d}').content == body


def test_r50_manifest_over_four_mib_is_413(client, repo):
    config = b'{"architecture": "amd64", "os": "linux"}'
    push_blob(client, repo, config)
    body = padded_manifest(config, 4 * MIB + 1)
    r = put(client, repo, 'big', body)
    assert r.status_code == 413
    assert r.headers['content-type'].startswith('application/json')
    assert r.json()['errors'][0]['code'] in ('MANIFEST_INVALID', 'SIZE_INVALID')
    assert client.get(f'/v2/{repo}/manifests/big').status_code == 404


def test_r50_manifest_limit_is_configurable(tmp_path: Path):
    c = InProcess(create_app(Config(root=tmp_path / 'data', manifest_max_bytes=5 * MIB)))
    name = 'big/limit'
    config = b'{"architecture": "amd64", "os": "linux"}'
    push_blob(c, name, config)
    put_ok(c, name, 'ok', padded_manifest(config, 5 * MIB))
    r = put(c, name, 'too-big', padded_manifest(config, 5 * MIB + 1))
    assert r.status_code == 413


@pytest.mark.parametrize('by', ['digest', 'tag'])
def test_r51_oci_subject_header_for_manifest_and_index_with_subject(client, repo, by):
    subject_digest, subject_body = push_image(client, repo, 'subject')
    subject = manifest_descriptor(subject_body)
    push_blob(client, repo, b'{}')
    artifact = dumps({
        'schemaVersion': 2, 'mediaType': OCI_MANIFEST,
        'artifactType': 'application/vnd.example.sig',
        'config': descriptor(EMPTY_JSON, b'{}'), 'layers': [], 'subject': subject,
    })
    ref = digest(artifact) if by == 'digest' else 'artifact'
    r = put_ok(client, repo, ref, artifact)
    assert r.headers['oci-subject'] == subject_digest
    index = dumps(index_doc([manifest_descriptor(artifact)], subject=subject))
    ref = digest(index) if by == 'digest' else 'index'
    r = put_ok(client, repo, ref, index, OCI_INDEX)
    assert r.headers['oci-subject'] == subject_digest


def test_r51_no_oci_subject_header_without_subject(client, repo):
    config, layer = blobs(client, repo, 'nosubject')
    r = put_ok(client, repo, 'v1', image_manifest(config, [layer]))
    assert 'oci-subject' not in r.headers


# -- §2.1 Determine the media type --------------------------------------------------


@pytest.mark.parametrize('media_type', [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST,
                                        DOCKER_LIST])
def test_s2_1_accepts_the_four_manifest_types(client, repo, media_type):
    if media_type == OCI_MANIFEST:
        config, layer = blobs(client, repo, 'oci')
        body = image_manifest(config, [layer])
    elif media_type == DOCKER_MANIFEST:
        body = docker_manifest(client, repo, 'docker')
    else:
        child = docker_manifest(client, repo, 'child')
        put_ok(client, repo, digest(child), child, DOCKER_MANIFEST)
        body = dumps(index_doc([manifest_descriptor(child, DOCKER_MANIFEST)], media_type))
    r = put_ok(client, repo, 'v1', body, media_type)
    assert r.headers['docker-content-digest'] == digest(body)
    got = client.get(f'/v2/{repo}/manifests/v1')
    assert got.headers['content-type'] == media_type
    assert got.content == body


@pytest.mark.parametrize('media_type', [
    'application/vnd.docker.distribution.manifest.v1+json',
    'application/vnd.docker.distribution.manifest.v1+prettyjws',
])
def test_s2_1_docker_schema1_is_rejected_with_manifest_invalid(client, repo, media_type):
    body = dumps({'schemaVersion': 1, 'name': repo, 'tag': 'v1', 'architecture': 'amd64',
                  'fsLayers': [], 'history': []})
    assert_error(put(client, repo, 'v1', body, media_type), 400, 'MANIFEST_INVALID')
    assert_error(put(client, repo, 'v1', body, None), 400, 'MANIFEST_INVALID')


@pytest.mark.parametrize(('body_type', 'content_type'), [
    (OCI_MANIFEST, OCI_INDEX),
    (OCI_MANIFEST, DOCKER_MANIFEST),
    (DOCKER_MANIFEST, OCI_MANIFEST),
])
def test_s2_1_body_media_type_differs_from_content_type_is_400_manifest_invalid(
        client, repo, body_type, content_type):
    config, layer = blobs(client, repo, 'mismatch')
    doc = manifest_doc(config, [layer])
    doc['mediaType'] = body_type
    assert_error(put(client, repo, 'v1', dumps(doc), content_type), 400,
                 'MANIFEST_INVALID')
    assert client.get(f'/v2/{repo}/manifests/v1').status_code == 404


def test_s2_1_index_body_pushed_as_manifest_is_400_manifest_invalid(client, repo):
    body = dumps(index_doc([]))
    assert_error(put(client, repo, 'v1', body, OCI_MANIFEST), 400, 'MANIFEST_INVALID')


@pytest.mark.parametrize('content_type', ['application/octet-stream', 'application/json',
                                          None])
def test_s2_1_generic_or_missing_content_type_uses_body_media_type(
        client, repo, content_type):
    body = docker_manifest(client, repo, 'generic')
    put_ok(client, repo, 'v1', body, content_type)
    got = client.get(f'/v2/{repo}/manifests/v1')
    assert got.headers['content-type'] == DOCKER_MANIFEST
    assert got.content == body


def test_s2_1_type_inferred_from_shape_without_media_type(client, repo):
    config, layer = blobs(client, repo, 'shape')
    doc = manifest_doc(config, [layer])
    del doc['mediaType']
    manifest = dumps(doc)
    put_ok(client, repo, 'image', manifest, 'application/octet-stream')
    assert client.get(f'/v2/{repo}/manifests/image').headers['content-type'] == OCI_MANIFEST
    index = dumps({'schemaVersion': 2, 'manifests': [manifest_descriptor(manifest)]})
    put_ok(client, repo, 'index', index, None)
    assert client.get(f'/v2/{repo}/manifests/index').headers['content-type'] == OCI_INDEX


@pytest.mark.parametrize('media_type', [OCI_MANIFEST, OCI_INDEX])
def test_s2_1_no_media_type_field_with_oci_content_type_is_accepted(
        client, repo, media_type):
    config, layer = blobs(client, repo, 'nomt')
    doc = manifest_doc(config, [layer])
    del doc['mediaType']
    manifest = dumps(doc)
    if media_type == OCI_MANIFEST:
        body = manifest
    else:
        put_ok(client, repo, digest(manifest), manifest)
        body = dumps({'schemaVersion': 2, 'manifests': [manifest_descriptor(manifest)]})
    put_ok(client, repo, 'v1', body, media_type)
    got = client.get(f'/v2/{repo}/manifests/v1')
    assert got.status_code == 200
    assert got.headers['content-type'] == media_type
    assert got.content == body


def test_s2_1_type_confusion_manifest_with_manifests_is_rejected(client, repo):
    config, layer = blobs(client, repo, 'confused')
    doc = manifest_doc(config, [layer], manifests=[])
    assert_error(put(client, repo, 'v1', dumps(doc), OCI_MANIFEST), 400,
                 'MANIFEST_INVALID')


@pytest.mark.parametrize('member', ['config', 'layers'])
def test_s2_1_type_confusion_index_with_config_or_layers_is_rejected(
        client, repo, member):
    config, layer = blobs(client, repo, 'confused')
    extra = ({'config': descriptor(OCI_CONFIG, config)} if member == 'config'
             else {'layers': [descriptor(OCI_LAYER, layer)]})
    body = dumps(index_doc([], **extra))
    assert_error(put(client, repo, 'v1', body, OCI_INDEX), 400, 'MANIFEST_INVALID')


# -- §2.2 Structural checks -----------------------------------------------------------


@pytest.mark.parametrize('body', [b'', b'   ', b'{', b'[]', b'"manifest"', b'null',
                                  b'blablabla', b'\xff\xfe{}', b'{"schemaVersion": NaN}'])
def test_s2_2_body_that_is_not_a_json_object_is_400_manifest_invalid(client, repo, body):
    assert_error(put(client, repo, 'v1', body), 400, 'MANIFEST_INVALID')


@pytest.mark.parametrize('version', [1, 3, '2', 2.0, None, 'missing'])
def test_s2_2_schema_version_must_be_the_integer_2(client, repo, version):
    config, layer = blobs(client, repo, 'sv')
    doc = manifest_doc(config, [layer])
    if version == 'missing':
        del doc['schemaVersion']
    else:
        doc['schemaVersion'] = version
    assert_error(put(client, repo, 'v1', dumps(doc)), 400, 'MANIFEST_INVALID')


@pytest.mark.parametrize('config', ['missing', 'string', 'no-digest', 'no-size',
                                    'no-media-type'])
def test_s2_2_config_must_be_a_descriptor(client, repo, config):
    cfg, layer = blobs(client, repo, 'cfg')
    doc = manifest_doc(cfg, [layer])
    if config == 'missing':
        del doc['config']
    elif config == 'string':
        doc['config'] = digest(cfg)
    else:
        del doc['config'][{'no-digest': 'digest', 'no-size': 'size',
                           'no-media-type': 'mediaType'}[config]]
    assert_error(put(client, repo, 'v1', dumps(doc)), 400, 'MANIFEST_INVALID')


@pytest.mark.parametrize('layers', ['missing', {}, 'layer', None])
def test_s2_2_layers_must_be_an_array(client, repo, layers):
    config, _ = blobs(client, repo, 'layers')
    doc = manifest_doc(config, [])
    if layers == 'missing':
        del doc['layers']
    else:
        doc['layers'] = layers
    assert_error(put(client, repo, 'v1', dumps(doc)), 400, 'MANIFEST_INVALID')


def test_s2_2_empty_layers_are_accepted(client, repo):
    config, _ = blobs(client, repo, 'empty')
    body = image_manifest(config, [])
    put_ok(client, repo, 'v1', body)
    assert client.get(f'/v2/{repo}/manifests/v1').content == body


def test_s2_2_index_with_empty_manifests_is_accepted(client, repo):
    body = dumps(index_doc([]))
    put_ok(client, repo, 'empty-index', body, OCI_INDEX)
    got = client.get(f'/v2/{repo}/manifests/empty-index')
    assert got.content == body
    assert got.headers['content-type'] == OCI_INDEX


def test_s2_2_index_without_manifests_is_400_manifest_invalid(client, repo):
    body = dumps({'schemaVersion': 2, 'mediaType': OCI_INDEX})
    assert_error(put(client, repo, 'v1', body, OCI_INDEX), 400, 'MANIFEST_INVALID')


@pytest.mark.parametrize('size', [-1, '12', 1.5, None, 2**63, True])
def test_s2_2_descriptor_size_is_a_non_negative_integer(client, repo, size):
    config, layer = blobs(client, repo, 'size')
    doc = manifest_doc(config, [layer])
    doc['layers'][0]['size'] = size
    assert_error(put(client, repo, 'v1', dumps(doc)), 400, 'MANIFEST_INVALID')


@pytest.mark.parametrize('bad', [
    lambda d: d.upper().replace('SHA256', 'sha256'),  # upper-case hex
    lambda d: d[:-1],  # 63 hex characters
    lambda d: 'sha512:' + d.split(':')[1],  # sha512 with 64 hex characters
    lambda d: d.replace(':', '-'),  # no separator
    lambda d: 'SHA256:' + d.split(':')[1],  # upper-case algorithm
    lambda d: 'blake3:' + 'a' * 63,  # registered, wrong length
    lambda d: '',
])
def test_s2_2_malformed_descriptor_digest_is_400(client, repo, bad):
    config, layer = blobs(client, repo, 'digest')
    doc = manifest_doc(config, [layer])
    doc['layers'][0]['digest'] = bad(doc['layers'][0]['digest'])
    r = put(client, repo, 'v1', dumps(doc))
    assert r.status_code == 400
    assert error_codes(r)[0] in ('MANIFEST_INVALID', 'DIGEST_INVALID')


def test_s2_2_unknown_fields_are_accepted(client, repo):
    config, layer = blobs(client, repo, 'unknown')
    push_image(client, repo, 'child')
    doc = manifest_doc(config, [layer])
    doc['org.example.custom'] = {'nested': [1, 2, None]}
    doc['config']['newUnspecifiedField'] = None
    doc['layers'][0]['newUnspecifiedField'] = 'aGVsbG8gd29ybGQ='
    doc['layers'][0]['org.example.x'] = 7
    body = dumps(doc)
    put_ok(client, repo, 'v1', body)
    assert client.get(f'/v2/{repo}/manifests/v1').content == body
    child = client.get(f'/v2/{repo}/manifests/child').content
    index = dumps(index_doc(
        [manifest_descriptor(child, platform={
            'architecture': 'arm64', 'os': 'linux', 'variant': 'v8',
            'org.example.platform': 'extra'}, newUnspecifiedField=None)],
        **{'org.example.top': True},
    ))
    put_ok(client, repo, 'index', index, OCI_INDEX)


def test_s2_2_unknown_media_and_artifact_types_are_accepted(client, repo):
    config, layer = b'opaque config', b'opaque layer'
    push_blob(client, repo, config)
    push_blob(client, repo, layer)
    body = dumps({
        'schemaVersion': 2, 'mediaType': OCI_MANIFEST,
        'artifactType': 'application/vnd.example.unknown+type',
        'config': descriptor('application/vnd.example.config.v9+yaml', config),
        'layers': [descriptor('text/plain; charset=utf-8', layer),
                   descriptor('application/x-totally-unknown', layer)],
    })
    put_ok(client, repo, 'v1', body)
    assert client.get(f'/v2/{repo}/manifests/v1').content == body


def test_s2_2_empty_json_config_without_artifact_type_is_accepted(client, repo):
    push_blob(client, repo, b'{}')
    body = dumps({'schemaVersion': 2, 'mediaType': OCI_MANIFEST,
                  'config': descriptor(EMPTY_JSON, b'{}'), 'layers': []})
    put_ok(client, repo, 'v1', body)


def test_s2_2_data_field_is_accepted(client, repo):
    config, layer = blobs(client, repo, 'data')
    doc = manifest_doc(config, [layer])
    doc['config']['data'] = base64.b64encode(config).decode()
    doc['layers'][0]['data'] = base64.b64encode(layer).decode()
    body = dumps(doc)
    put_ok(client, repo, 'v1', body)
    assert client.get(f'/v2/{repo}/manifests/v1').content == body


def test_s2_2_data_field_that_is_not_the_content_is_rejected(client, repo):
    config, layer = blobs(client, repo, 'baddata')
    doc = manifest_doc(config, [layer])
    doc['config']['data'] = base64.b64encode(b'something else').decode()
    assert_error(put(client, repo, 'v1', dumps(doc)), 400, 'MANIFEST_INVALID')


def test_s2_2_annotations_with_empty_values_are_accepted(client, repo):
    config, layer = blobs(client, repo, 'ann')
    doc = manifest_doc(config, [layer], annotations={'org.example.empty': '',
                                                      'org.example.k': 'v'})
    doc['layers'][0]['annotations'] = {'org.opencontainers.image.title': ''}
    put_ok(client, repo, 'v1', dumps(doc))


def test_s2_2_annotation_values_must_be_strings(client, repo):
    config, layer = blobs(client, repo, 'ann')
    doc = manifest_doc(config, [layer], annotations={'org.example.n': 1})
    assert_error(put(client, repo, 'v1', dumps(doc)), 400, 'MANIFEST_INVALID')


def test_s2_2_urls_on_an_uploaded_layer_are_accepted(client, repo):
    config, layer = blobs(client, repo, 'urls')
    doc = manifest_doc(config, [layer])
    doc['layers'][0]['urls'] = ['https://example.com/layer.tar.gz']
    put_ok(client, repo, 'v1', dumps(doc))


# -- §2.3 Digest / reference checks -----------------------------------------------------


@pytest.mark.parametrize('reference', [
    'sha256:baddigeststring',
    'sha256:' + 'A' * 64,
    'sha256:' + 'a' * 63,
    'sha512:' + 'a' * 64,
    'md5:' + 'a' * 32,
    'sha256:',
])
def test_s2_3_put_to_a_bad_digest_reference_is_400(client, repo, reference):
    config, layer = blobs(client, repo, 'baddigest')
    r = put(client, repo, reference, image_manifest(config, [layer]))
    assert r.status_code == 400
    assert error_codes(r)[0] in ('DIGEST_INVALID', 'MANIFEST_INVALID')


def test_s2_3_put_manifests_sha256_baddigeststring_is_400(client, repo):
    config, layer = blobs(client, repo, 'bds')
    r = put(client, repo, 'sha256:baddigeststring', image_manifest(config, [layer]))
    assert_error(r, 400, 'DIGEST_INVALID')


@pytest.mark.parametrize('algorithm', ['sha256', 'sha512'])
def test_s2_3_body_that_does_not_match_the_url_digest_is_400_digest_invalid(
        client, repo, algorithm):
    config, layer = blobs(client, repo, 'spaces')
    body = image_manifest(config, [layer])
    d = digest(body, algorithm)
    r = put(client, repo, d, body + b'  ')
    assert_error(r, 400, 'DIGEST_INVALID')
    assert client.get(f'/v2/{repo}/manifests/{d}').status_code == 404


def test_s2_3_sha512_digest_is_computed_with_sha512(client, repo):
    config, layer = blobs(client, repo, 'algo')
    body = image_manifest(config, [layer])
    # the sha256 hex in a sha512 reference would be "too short", the real sha512 works.
    assert put(client, repo, 'sha512:' + hashlib.sha256(body).hexdigest(), body
               ).status_code == 400
    put_ok(client, repo, digest(body, 'sha512'), body)


@pytest.mark.parametrize('tag', ['-leading-dash', '.leading-dot', 'a' * 129, 'b@d',
                                 'sp ace', 'a+b'])
def test_s2_3_invalid_tag_on_put_is_400(client, repo, tag):
    config, layer = blobs(client, repo, 'invalidtag')
    r = put(client, repo, tag, image_manifest(config, [layer]))
    assert_error(r, 400, 'MANIFEST_INVALID')


# -- §2.4 Reference (existence) checks --------------------------------------------------


def test_s2_4_nondistributable_layers_never_uploaded_are_accepted(client, repo):
    config, layer = blobs(client, repo, 'nondist')
    foreign_gzip, foreign_tar = b'foreign gzip layer', b'foreign tar layer'
    body = dumps({
        'schemaVersion': 2, 'mediaType': OCI_MANIFEST,
        'config': descriptor(OCI_CONFIG, config),
        'layers': [
            descriptor(OCI_NONDIST_GZIP, foreign_gzip,
                       urls=['https://example.com/a.tar.gz']),
            descriptor(OCI_NONDIST_TAR, foreign_tar, urls=['https://example.com/a.tar']),
            descriptor(OCI_LAYER, layer),
        ],
    })
    put_ok(client, repo, 'v1', body)
    assert client.get(f'/v2/{repo}/manifests/v1').content == body


def test_s2_4_docker_foreign_layer_never_uploaded_is_accepted(client, repo):
    config, layer = blobs(client, repo, 'foreign')
    body = dumps({
        'schemaVersion': 2, 'mediaType': DOCKER_MANIFEST,
        'config': descriptor(DOCKER_CONFIG, config),
        'layers': [descriptor(DOCKER_FOREIGN, b'windows base layer',
                              urls=['https://example.com/base.tar.gz']),
                   descriptor(DOCKER_LAYER, layer)],
    })
    put_ok(client, repo, 'v1', body, DOCKER_MANIFEST)


@pytest.mark.parametrize('media_type', [OCI_INDEX, DOCKER_LIST])
def test_s2_4_index_whose_children_are_missing_is_manifest_blob_unknown(
        client, repo, media_type):
    present, present_body = push_image(client, repo, 'present')
    gone = [b'{"never": "pushed one"}', b'{"never": "pushed two"}']
    body = dumps(index_doc([manifest_descriptor(present_body),
                            *(manifest_descriptor(g) for g in gone)], media_type))
    r = put(client, repo, 'v1', body, media_type)
    assert_error(r, 400, 'MANIFEST_BLOB_UNKNOWN')
    errors = r.json()['errors']
    assert [e['code'] for e in errors] == ['MANIFEST_BLOB_UNKNOWN'] * 2
    named = [json.dumps(e.get('detail')) for e in errors]
    for g in gone:
        assert sum(digest(g) in text for text in named) == 1
    assert not any(present in text for text in named)


def test_s2_4_index_children_that_are_blobs_are_accepted(client, repo):
    """buildkit's registry cache: an index whose entries are plain layer blobs."""
    layer_a, layer_b = b'cache layer a', b'cache layer b'
    push_blob(client, repo, layer_a)
    push_blob(client, repo, layer_b)
    cfg = b'{"layers": []}'
    push_blob(client, repo, cfg)
    body = dumps(index_doc([
        descriptor(OCI_LAYER, layer_a), descriptor(OCI_LAYER, layer_b),
        descriptor('application/vnd.buildkit.cacheconfig.v0', cfg),
    ]))
    put_ok(client, repo, 'cache', body, OCI_INDEX)
    assert client.get(f'/v2/{repo}/manifests/cache').content == body


def test_s2_4_index_children_with_sha512_digests(client, repo):
    config, layer = blobs(client, repo, 'child512')
    child = image_manifest(config, [layer])
    put_ok(client, repo, digest(child, 'sha512'), child)
    nested = dumps(index_doc([manifest_descriptor(child, algorithm='sha512')]))
    put_ok(client, repo, digest(nested, 'sha512'), nested, OCI_INDEX)
    outer = dumps(index_doc([manifest_descriptor(nested, OCI_INDEX, algorithm='sha512')]))
    put_ok(client, repo, 'nested', outer, OCI_INDEX)


def test_s2_4_blob_pushed_only_to_another_repository_does_not_count(client, repo):
    other = f'{repo}-other'
    config, layer = blobs(client, other, 'scoped')
    assert client.head(f'/v2/{repo}/blobs/{digest(layer)}').status_code == 404
    body = image_manifest(config, [layer])
    r = put(client, repo, 'v1', body)
    assert_error(r, 400, 'MANIFEST_BLOB_UNKNOWN')
    assert len(r.json()['errors']) == 2
    put_ok(client, other, 'v1', body)


def test_s2_4_blob_deleted_from_the_repository_no_longer_counts(client, repo):
    config, layer = blobs(client, repo, 'deleted')
    assert client.delete(f'/v2/{repo}/blobs/{digest(layer)}').status_code == 202
    assert client.head(f'/v2/{repo}/blobs/{digest(layer)}').status_code == 404
    r = put(client, repo, 'v1', image_manifest(config, [layer]))
    assert_error(r, 400, 'MANIFEST_BLOB_UNKNOWN')
    assert error_codes(r) == ['MANIFEST_BLOB_UNKNOWN']
    assert digest(layer) in json.dumps(r.json()['errors'][0].get('detail'))


def test_s2_4_manifest_in_another_repository_does_not_satisfy_an_index(client, repo):
    other = f'{repo}-other'
    _, child = push_image(client, other, 'child')
    body = dumps(index_doc([manifest_descriptor(child)]))
    assert_error(put(client, repo, 'v1', body, OCI_INDEX), 400, 'MANIFEST_BLOB_UNKNOWN')


def test_s2_4_blob_mounted_into_the_repository_counts(client, repo):
    other = f'{repo}-source'
    config, layer = blobs(client, other, 'mounted')
    for blob in (config, layer):
        r = client.post(f'/v2/{repo}/blobs/uploads/?mount={digest(blob)}&from={other}')
        assert r.status_code == 201
    put_ok(client, repo, 'v1', image_manifest(config, [layer]))


def test_s2_4_subject_of_an_index_is_never_required(client, repo):
    _, child = push_image(client, repo, 'child')
    subject = manifest_descriptor(b'{"absent": "subject"}')
    body = dumps(index_doc([manifest_descriptor(child)], subject=subject))
    r = put_ok(client, repo, digest(body), body, OCI_INDEX)
    assert r.headers['oci-subject'] == subject['digest']


# -- §2.6 Side effects of a successful PUT ---------------------------------------------


def test_s2_6_re_put_of_identical_content_is_201_again(client, repo):
    config, layer = blobs(client, repo, 'again')
    body = image_manifest(config, [layer])
    for ref in ('v1', 'v1', digest(body), digest(body)):
        r = put_ok(client, repo, ref, body)
        assert r.headers['docker-content-digest'] == digest(body)
    assert client.get(f'/v2/{repo}/manifests/v1').content == body


def test_s2_6_moving_a_tag_last_writer_wins(client, repo):
    first, first_body = push_image(client, repo, 'moving', seed='first')
    second, second_body = push_image(client, repo, 'moving', seed='second')
    r = client.get(f'/v2/{repo}/manifests/moving')
    assert r.content == second_body
    assert r.headers['docker-content-digest'] == second
    assert client.get(f'/v2/{repo}/manifests/{first}').content == first_body
    assert client.get(f'/v2/{repo}/tags/list').json()['tags'] == ['moving']


def test_s2_6_read_after_write_by_digest_and_by_tag(client, repo):
    config, layer = blobs(client, repo, 'raw')
    for i in range(5):
        body = image_manifest(config, [layer], annotations={'n': str(i)})
        r = put_ok(client, repo, f'v{i}', body)
        d = r.headers['docker-content-digest']
        assert client.get(f'/v2/{repo}/manifests/{d}').content == body
        assert client.get(f'/v2/{repo}/manifests/v{i}').content == body
        assert client.head(f'/v2/{repo}/manifests/v{i}').headers[
            'docker-content-digest'] == d


def test_s2_6_same_bytes_addressable_by_sha256_and_sha512(client, repo):
    config, layer = blobs(client, repo, 'both')
    body = image_manifest(config, [layer])
    put_ok(client, repo, digest(body), body)
    put_ok(client, repo, digest(body, 'sha512'), body)
    for algorithm in ('sha256', 'sha512'):
        r = client.get(f'/v2/{repo}/manifests/{digest(body, algorithm)}')
        assert r.status_code == 200
        assert r.content == body
        assert r.headers['docker-content-digest'] == digest(body, algorithm)


def test_legacy_manifest_with_data_and_unspecified_field_in_tab_indented_json(
        client, repo):
    """The legacy suite's manifests: MarshalIndent with tabs, config ``data``,
    ``newUnspecifiedField`` on the config descriptor, pushed by tag and by digest."""
    config = json.dumps({'architecture': 'amd64', 'os': 'linux'}).encode()
    layer = b'legacy layer'
    push_blob(client, repo, config)
    push_blob(client, repo, layer)
    doc = {
        'schemaVersion': 2, 'mediaType': OCI_MANIFEST,
        'config': {**descriptor(OCI_CONFIG, config),
                   'data': base64.b64encode(config).decode(),
                   'newUnspecifiedField': base64.b64encode(b'hello world').decode()},
        'layers': [descriptor(OCI_LAYER, layer)],
    }
    body = json.dumps(doc, indent='\t').encode()
    put_ok(client, repo, 'tagtest0', body)
    put_ok(client, repo, digest(body), body)
    empty = json.dumps({'schemaVersion': 2, 'config': doc['config'], 'layers': []},
                       indent='\t').encode()
    put_ok(client, repo, 'emptylayer', empty)
    assert client.get(f'/v2/{repo}/manifests/emptylayer').content == empty


# -- §1.10 Content management -----------------------------------------------------------


def test_r70_delete_tag_is_202_and_the_tag_is_then_404(client, repo):
    d, body = push_image(client, repo, 'keep')
    r = put_ok(client, repo, f'{d}?tag=drop', body)
    assert _oci_tags(r) == ['drop']
    r = client.delete(f'/v2/{repo}/manifests/drop')
    assert r.status_code == 202
    assert_error(client.get(f'/v2/{repo}/manifests/drop'), 404, 'MANIFEST_UNKNOWN')
    assert client.head(f'/v2/{repo}/manifests/drop').status_code == 404
    assert client.get(f'/v2/{repo}/manifests/keep').content == body
    assert client.get(f'/v2/{repo}/manifests/{d}').content == body
    assert client.get(f'/v2/{repo}/tags/list').json()['tags'] == ['keep']


def test_r70_delete_unknown_tag_is_404(client, repo):
    push_image(client, repo, 'v1')
    assert_error(client.delete(f'/v2/{repo}/manifests/nope'), 404, 'MANIFEST_UNKNOWN')


def test_r71_delete_by_digest_removes_every_tag(client, repo):
    d, body = push_image(client, repo, 'a')
    put_ok(client, repo, f'{d}?tag=b&tag=C', body)
    _, other_body = push_image(client, repo, 'other', seed='other')
    r = client.delete(f'/v2/{repo}/manifests/{d}')
    assert r.status_code == 202
    for ref in (d, 'a', 'b', 'C'):
        assert_error(client.get(f'/v2/{repo}/manifests/{ref}'), 404, 'MANIFEST_UNKNOWN')
        assert client.head(f'/v2/{repo}/manifests/{ref}').status_code == 404
    assert client.get(f'/v2/{repo}/tags/list').json()['tags'] == ['other']
    assert client.get(f'/v2/{repo}/manifests/other').content == other_body
    assert_error(client.delete(f'/v2/{repo}/manifests/{d}'), 404, 'MANIFEST_UNKNOWN')


def test_r71_delete_by_digest_only_affects_its_repository(client, repo):
    other = f'{repo}-twin'
    d, body = push_image(client, repo, 'v1', seed='twin')
    d2, _ = push_image(client, other, 'v1', seed='twin')
    assert d == d2
    assert client.delete(f'/v2/{repo}/manifests/{d}').status_code == 202
    assert client.get(f'/v2/{other}/manifests/{d}').content == body
    assert client.get(f'/v2/{other}/manifests/v1').content == body


def test_r71_delete_by_sha512_digest(client, repo):
    config, layer = blobs(client, repo, 'del512')
    body = image_manifest(config, [layer])
    d = digest(body, 'sha512')
    put_ok(client, repo, f'{d}?tag=t512', body)
    assert client.delete(f'/v2/{repo}/manifests/{d}').status_code == 202
    assert client.get(f'/v2/{repo}/manifests/{d}').status_code == 404
    assert client.get(f'/v2/{repo}/manifests/t512').status_code == 404


def test_r71_delete_in_a_repository_that_does_not_exist_is_404(client, repo):
    r = client.delete(f'/v2/{repo}/manifests/{digest(b"nothing")}')
    assert_error(r, 404, 'NAME_UNKNOWN')


def test_r71_delete_of_unknown_digest_is_404_manifest_unknown(client, repo):
    push_image(client, repo, 'v1')
    r = client.delete(f'/v2/{repo}/manifests/{digest(b"not a manifest")}')
    assert_error(r, 404, 'MANIFEST_UNKNOWN')


def test_r71_delete_with_malformed_digest_is_400(client, repo):
    push_image(client, repo, 'v1')
    assert_error(client.delete(f'/v2/{repo}/manifests/sha256:nothex'), 400,
                 'DIGEST_INVALID')


def test_r72_delete_blob_is_202_then_404(client, repo):
    d = push_blob(client, repo, b'blob to delete')
    assert client.delete(f'/v2/{repo}/blobs/{d}').status_code == 202
    assert client.head(f'/v2/{repo}/blobs/{d}').status_code == 404
    assert_error(client.get(f'/v2/{repo}/blobs/{d}'), 404, 'BLOB_UNKNOWN')
    assert_error(client.delete(f'/v2/{repo}/blobs/{d}'), 404, 'BLOB_UNKNOWN')


def test_s5_delete_manifest_and_put_responses_carry_the_matrix_headers(client, repo):
    config, layer = blobs(client, repo, 'matrix')
    body = image_manifest(config, [layer])
    d = digest(body)
    r = put_ok(client, repo, f'{d}?tag=m', body)
    assert r.headers['location'].endswith(f'/v2/{repo}/manifests/{d}')
    assert r.headers['docker-content-digest'] == d
    assert _oci_tags(r) == ['m']
    assert r.content == b''
    assert client.delete(f'/v2/{repo}/manifests/m').status_code == 202
