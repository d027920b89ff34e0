"""Manifests: pull (end-3), push (end-7) and delete (end-9).

Each test is named after the rule it proves: ``rNN`` are the distribution-spec rules of
registry-checklist §1, ``legacy``/``new`` the conformance suites' expectations of
checklist §3.11. The manifest PUT rules (checklist §2) are in test_manifest_put.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from oci_ref.app import create_app
from oci_ref.config import Config
from tests.api.manifests_support import (
    MIB,
    blobs,
    docker_manifest,
    dumps,
    error_codes,
    index_doc,
    manifest_descriptor,
    manifest_doc,
    padded_manifest,
    put,
    put_ok,
)
from tests.support import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    EMPTY_JSON,
    OCI_INDEX,
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
