"""The manifest PUT rules of registry-checklist §2 (``s2_N``): media type, structure,
digests and references, each test named after the rule it proves."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from tests.api.manifests_support import (
    DOCKER_CONFIG,
    DOCKER_FOREIGN,
    DOCKER_LAYER,
    OCI_NONDIST_GZIP,
    OCI_NONDIST_TAR,
    blobs,
    docker_manifest,
    dumps,
    error_codes,
    index_doc,
    manifest_descriptor,
    manifest_doc,
    put,
    put_ok,
)
from tests.support import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    EMPTY_JSON,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    assert_error,
    descriptor,
    digest,
    image_manifest,
    push_blob,
    push_image,
)

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
