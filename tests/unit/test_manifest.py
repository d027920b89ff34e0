"""oci_ref.manifest: each test is named after the rule it proves (checklist §2)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
from typing import Any

import pytest

from oci_ref import manifest as m
from oci_ref.errors import ErrorCode, RegistryError

LAYER_GZ = 'application/vnd.oci.image.layer.v1.tar+gzip'
ND_LAYER_GZ = 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip'
ND_LAYER = 'application/vnd.oci.image.layer.nondistributable.v1.tar'
DOCKER_LAYER = 'application/vnd.docker.image.rootfs.diff.tar.gzip'
DOCKER_FOREIGN = 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip'
DOCKER_CONFIG = 'application/vnd.docker.container.image.v1+json'
EMPTY_JSON = 'application/vnd.oci.empty.v1+json'
ARTIFACT = 'application/vnd.example.thing.v1'


def digest_of(data: bytes, algorithm: str = 'sha256') -> str:
    return f'{algorithm}:{hashlib.new(algorithm, data).hexdigest()}'


def desc(
    media_type: str, content: bytes, algorithm: str = 'sha256', **extra: Any
) -> dict[str, Any]:
    return {
        'mediaType': media_type,
        'digest': digest_of(content, algorithm),
        'size': len(content),
        **extra,
    }


def image(**overrides: Any) -> dict[str, Any]:
    doc = {
        'schemaVersion': 2,
        'mediaType': m.OCI_MANIFEST,
        'config': desc(m.OCI_CONFIG, b'{"architecture":"amd64","os":"linux"}'),
        'layers': [desc(LAYER_GZ, b'layer zero'), desc(LAYER_GZ, b'layer one')],
    }
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not None}


def index(**overrides: Any) -> dict[str, Any]:
    child = desc(
        m.OCI_MANIFEST,
        b'child manifest',
        platform={'architecture': 'amd64', 'os': 'linux'},
    )
    doc = {'schemaVersion': 2, 'mediaType': m.OCI_INDEX, 'manifests': [child]}
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not None}


def docker_manifest(**overrides: Any) -> dict[str, Any]:
    doc = {
        'schemaVersion': 2,
        'mediaType': m.DOCKER_MANIFEST,
        'config': desc(DOCKER_CONFIG, b'docker config'),
        'layers': [desc(DOCKER_LAYER, b'docker layer')],
    }
    doc.update(overrides)
    return doc


def encode(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def parse(doc: Any, content_type: str | None = m.OCI_MANIFEST) -> m.ParsedManifest:
    return m.parse_manifest(doc if isinstance(doc, bytes) else encode(doc), content_type)


def rejected(doc: Any, content_type: str | None = m.OCI_MANIFEST) -> list[dict[str, Any]]:
    """The error details of a refused manifest; every entry must be MANIFEST_INVALID."""
    with pytest.raises(RegistryError) as info:
        parse(doc, content_type)
    assert info.value.status == 400
    assert {e.code for e in info.value.entries} == {ErrorCode.MANIFEST_INVALID}
    return [e.detail for e in info.value.entries]


def paths(details: list[dict[str, Any]]) -> list[str]:
    return [d['path'] for d in details]


# --- media type determination (checklist §2.1) -------------------------------------


def test_image_manifest_with_empty_layers_is_accepted() -> None:
    parsed = parse(image(layers=[]))
    assert parsed.layers == ()
    assert parsed.config is not None


def test_index_with_empty_manifests_is_accepted() -> None:
    parsed = parse(index(manifests=[]), m.OCI_INDEX)
    assert parsed.is_index
    assert parsed.manifests == ()


def test_no_media_type_field_with_oci_content_type_accepted() -> None:
    parsed = parse(image(mediaType=None), m.OCI_MANIFEST)
    assert parsed.media_type == m.OCI_MANIFEST
    parsed = parse(index(mediaType=None), m.OCI_INDEX)
    assert parsed.media_type == m.OCI_INDEX


@pytest.mark.parametrize(
    'content_type',
    [
        'application/vnd.oci.image.manifest.v1+json; charset=utf-8',
        'Application/VND.OCI.Image.Manifest.v1+JSON',
        ' application/vnd.oci.image.manifest.v1+json ;q=1',
    ],
)
def test_content_type_parameters_and_case_are_ignored(content_type: str) -> None:
    assert parse(image(), content_type).media_type == m.OCI_MANIFEST


@pytest.mark.parametrize(
    'content_type', [None, '', 'application/octet-stream', 'application/json']
)
def test_octet_stream_content_type_infers_from_body(content_type: str | None) -> None:
    assert parse(image(), content_type).media_type == m.OCI_MANIFEST
    assert parse(index(), content_type).media_type == m.OCI_INDEX
    assert parse(docker_manifest(), content_type).media_type == m.DOCKER_MANIFEST
    # No mediaType either: the shape decides.
    assert parse(image(mediaType=None), content_type).media_type == m.OCI_MANIFEST
    assert parse(index(mediaType=None), content_type).media_type == m.OCI_INDEX


def test_content_type_and_body_media_type_mismatch_is_manifest_invalid() -> None:
    details = rejected(image(), m.OCI_INDEX)
    assert paths(details) == ['/mediaType']
    assert 'Content-Type' in details[0]['rule']
    details = rejected(docker_manifest(), m.OCI_MANIFEST)
    assert paths(details) == ['/mediaType']


@pytest.mark.parametrize(
    'content_type',
    [
        'application/vnd.docker.distribution.manifest.v1+json',
        'application/vnd.docker.distribution.manifest.v1+prettyjws',
    ],
)
def test_docker_schema1_rejected(content_type: str) -> None:
    schema1 = {
        'schemaVersion': 1,
        'name': 'a/b',
        'tag': 'x',
        'fsLayers': [],
        'history': [],
    }
    (detail,) = rejected(schema1, content_type)
    assert 'schema 1' in detail['reason']
    assert detail['supported'] == sorted(m.MANIFEST_TYPES)


def test_docker_schema1_body_with_generic_content_type_rejected() -> None:
    schema1 = {'schemaVersion': 1, 'name': 'a/b', 'tag': 'x', 'fsLayers': []}
    (detail,) = rejected(schema1, 'application/octet-stream')
    assert 'schema 1' in detail['reason']


@pytest.mark.parametrize(
    'content_type',
    ['application/vnd.oci.artifact.manifest.v1+json', 'text/plain', m.OCI_CONFIG],
)
def test_unknown_content_type_rejected_with_supported_list(content_type: str) -> None:
    (detail,) = rejected(image(mediaType=None), content_type)
    for media_type in m.MANIFEST_TYPES:
        assert media_type in detail['rule']
    assert detail['spec'] == 'distribution-spec §Pushing Manifests'


@pytest.mark.parametrize('media_type', ['application/vnd.example+json', 7, ''])
def test_unknown_body_media_type_with_generic_content_type_rejected(
    media_type: Any,
) -> None:
    (detail,) = rejected(image(mediaType=media_type), 'application/octet-stream')
    assert detail['path'] == '/mediaType'


def test_body_without_config_or_manifests_cannot_be_typed() -> None:
    (detail,) = rejected({'schemaVersion': 2}, None)
    assert detail['path'] == ''
    assert 'config or manifests' in detail['rule']


@pytest.mark.parametrize(
    'body',
    [
        b'',
        b'  \n',
        b'blablabla',
        b'\xff\xfe\x00',
        b'[]',
        b'"a manifest"',
        b'2',
        b'null',
        b'{"schemaVersion": 2, "config": NaN}',
        b'{"schemaVersion": 2,',
        json.dumps(image()).encode('utf-16'),
        b'[' * 100_000 + b']' * 100_000,
    ],
)
def test_body_must_be_a_utf8_json_object(body: bytes) -> None:
    (detail,) = rejected(body)
    assert detail['path'] == ''
    assert 'JSON object' in detail['rule']


# --- structure (checklist §2.2) -----------------------------------------------------


@pytest.mark.parametrize('version', [1, 3, '2', 2.0, None, True])
def test_schema_version_must_be_integer_2(version: Any) -> None:
    doc = image()
    doc['schemaVersion'] = version
    assert paths(rejected(doc)) == ['/schemaVersion']


def test_missing_schema_version_is_reported() -> None:
    assert paths(rejected(image(schemaVersion=None))) == ['/schemaVersion']


def test_image_manifest_requires_config_and_layers() -> None:
    assert sorted(paths(rejected(image(config=None, layers=None)))) == [
        '/config',
        '/layers',
    ]


def test_image_manifest_config_must_be_a_descriptor() -> None:
    assert paths(rejected(image(config='sha256:abc'))) == ['/config']
    assert paths(rejected(image(layers={'0': desc(LAYER_GZ, b'x')}))) == ['/layers']


def test_index_requires_manifests() -> None:
    assert paths(rejected(index(manifests=None), m.OCI_INDEX)) == ['/manifests']


@pytest.mark.parametrize('member', ['config', 'layers'])
def test_index_with_config_is_type_confusion(member: str) -> None:
    doc = index(**{member: image()[member]})
    (detail,) = rejected(doc, m.OCI_INDEX)
    assert detail['path'] == f'/{member}'
    assert 'image index' in detail['rule']


def test_image_manifest_with_manifests_is_type_confusion() -> None:
    (detail,) = rejected(image(manifests=[]))
    assert detail['path'] == '/manifests'


def test_generic_content_type_with_both_shapes_is_type_confusion() -> None:
    doc = image(mediaType=None, manifests=[])
    assert sorted(paths(rejected(doc, None))) == ['/config', '/layers']


def test_docker_manifest_requires_its_media_type_field() -> None:
    doc = docker_manifest(mediaType=m.DOCKER_MANIFEST)
    del doc['mediaType']
    assert paths(rejected(doc, m.DOCKER_MANIFEST)) == ['/mediaType']


def test_docker_manifest_list_with_layers_is_type_confusion() -> None:
    doc = {
        'schemaVersion': 2,
        'mediaType': m.DOCKER_LIST,
        'manifests': [],
        'layers': [],
    }
    assert paths(rejected(doc, m.DOCKER_LIST)) == ['/layers']


@pytest.mark.parametrize('member', ['mediaType', 'digest', 'size'])
def test_descriptor_requires_media_type_digest_and_size(member: str) -> None:
    doc = image()
    del doc['layers'][1][member]
    assert paths(rejected(doc)) == [f'/layers/1/{member}']


@pytest.mark.parametrize('size', [-1, 1.5, 10.0, '10', True, None, 2**63])
def test_size_is_a_non_negative_int64(size: Any) -> None:
    doc = image()
    doc['config']['size'] = size
    assert paths(rejected(doc)) == ['/config/size']


def test_size_at_int64_maximum_is_accepted() -> None:
    doc = image()
    doc['layers'][0]['size'] = 2**63 - 1
    assert parse(doc).layers[0].size == 2**63 - 1


def test_uppercase_hex_digest_rejected() -> None:
    doc = image()
    doc['layers'][0]['digest'] = (
        doc['layers'][0]['digest'].upper().replace('SHA256', 'sha256')
    )
    (detail,) = rejected(doc)
    assert detail['path'] == '/layers/0/digest'
    assert 'lower-case hex' in detail['rule']


@pytest.mark.parametrize(
    'digest',
    [
        'sha256:abc',
        'sha512:' + 'a' * 64,
        'sha256',
        'sha256:',
        ':' + 'a' * 64,
        'SHA256:' + 'a' * 64,
        'blake3:' + 'A' * 64,
        'sha256:' + 'a' * 64 + '\n',
        'sha256:' + 'g' * 64,
        42,
    ],
)
def test_descriptor_digest_follows_grammar_and_registered_encodings(digest: Any) -> None:
    doc = image()
    doc['config']['digest'] = digest
    # Exactly one failure per mistake, whether the schema or the code caught it.
    assert paths(rejected(doc)) == ['/config/digest']


def test_sha512_descriptor_digest_accepted() -> None:
    doc = image(layers=[desc(LAYER_GZ, b'five twelve', 'sha512')])
    parsed = parse(doc)
    assert parsed.layers[0].digest.startswith('sha512:')
    assert len(parsed.layers[0].digest) == len('sha512:') + 128


def test_subject_and_index_children_follow_the_same_digest_rules() -> None:
    bad = desc(m.OCI_MANIFEST, b'subject')
    bad['digest'] = 'sha256:' + 'A' * 64
    assert paths(rejected(image(subject=bad))) == ['/subject/digest']
    assert paths(rejected(index(manifests=[bad]), m.OCI_INDEX)) == ['/manifests/0/digest']
    bad['digest'] = 'sha512:' + 'a' * 96
    assert paths(rejected(index(subject=bad), m.OCI_INDEX)) == ['/subject/digest']


def test_unknown_fields_and_null_unknown_fields_accepted() -> None:
    doc = image(**{'org.example.Xq7': 'random', 'newUnspecifiedField': None})
    doc['config']['newUnspecifiedField'] = None
    doc['layers'][0]['newUnspecifiedField'] = 'aGVsbG8gd29ybGQ='
    doc['layers'][1]['data'] = None  # v1.1.0-rc conformance serialised unset data as null
    doc['layers'][1]['platform'] = {
        'architecture': 'arm',
        'os': 'linux',
        'x-extra': [1],
    }
    parsed = parse(doc)
    assert len(parsed.layers) == 2


def test_unknown_media_types_and_parameters_are_accepted() -> None:
    doc = image(
        config=desc('application/vnd.unknown.config.v9', b'{}'),
        layers=[desc('text/plain; charset=utf-8', b'hello'), desc(ARTIFACT, b'thing')],
    )
    parsed = parse(doc)
    assert parsed.layers[0].media_type == 'text/plain; charset=utf-8'


def test_descriptor_media_type_must_be_a_string() -> None:
    doc = image()
    doc['layers'][0]['mediaType'] = ['text/plain']
    assert paths(rejected(doc)) == ['/layers/0/mediaType']


def test_annotations_are_a_string_to_string_map() -> None:
    assert parse(image(annotations={'org.example': ''})).annotations == {'org.example': ''}
    assert paths(rejected(image(annotations={'n': 1}))) == ['/annotations/n']
    assert paths(rejected(image(annotations=['a']))) == ['/annotations']
    doc = image()
    doc['layers'][0]['annotations'] = {'k': None}
    assert paths(rejected(doc)) == ['/layers/0/annotations/k']


def test_urls_are_an_array_of_strings() -> None:
    doc = image()
    doc['layers'][0]['urls'] = 'https://example.com/blob'
    assert paths(rejected(doc)) == ['/layers/0/urls']
    doc['layers'][0]['urls'] = ['https://example.com/blob', 3]
    assert paths(rejected(doc)) == ['/layers/0/urls/1']


def test_platform_requires_architecture_and_os_strings() -> None:
    doc = index()
    doc['manifests'][0]['platform'] = {'os': 'linux'}
    assert paths(rejected(doc, m.OCI_INDEX)) == ['/manifests/0/platform/architecture']
    doc['manifests'][0]['platform'] = {
        'os': 'linux',
        'architecture': 'arm',
        'os.features': 'x',
    }
    assert paths(rejected(doc, m.OCI_INDEX)) == ['/manifests/0/platform/os.features']


def test_artifact_type_must_be_a_string() -> None:
    assert paths(rejected(image(artifactType=5))) == ['/artifactType']


def test_nested_index_without_platform_accepted() -> None:
    child = desc(m.OCI_INDEX, b'inner index')
    assert (
        parse(index(manifests=[child]), m.OCI_INDEX).manifests[0].media_type == m.OCI_INDEX
    )


def test_docker_schema2_manifest_accepted() -> None:
    parsed = parse(docker_manifest(), m.DOCKER_MANIFEST)
    assert parsed.media_type == m.DOCKER_MANIFEST
    assert not parsed.is_index
    assert parsed.config is not None
    assert parsed.config.media_type == DOCKER_CONFIG


def test_docker_manifest_list_accepted_with_or_without_platform() -> None:
    with_platform = desc(
        m.DOCKER_MANIFEST, b'a', platform={'architecture': 'amd64', 'os': 'linux'}
    )
    # buildkit's registry cache exports list entries that are plain blobs, no platform.
    cache_entry = desc(DOCKER_LAYER, b'cache blob')
    doc = {
        'schemaVersion': 2,
        'mediaType': m.DOCKER_LIST,
        'manifests': [with_platform, cache_entry],
    }
    parsed = parse(doc, m.DOCKER_LIST)
    assert parsed.is_index
    assert len(parsed.manifests) == 2


def test_data_field_matching_content_accepted() -> None:
    content = b'{"architecture":"amd64","os":"linux"}'
    config = desc(m.OCI_CONFIG, content, data=base64.b64encode(content).decode())
    empty = desc(EMPTY_JSON, b'{}', 'sha512', data='e30=')
    assert parse(image(config=config, layers=[empty])).config == m.Descriptor(
        m.OCI_CONFIG, digest_of(content), len(content)
    )


def test_data_field_must_match_digest() -> None:
    config = desc(m.OCI_CONFIG, b'ab', data=base64.b64encode(b'ba').decode())
    (detail,) = rejected(image(config=config))
    assert detail['path'] == '/config/data'
    assert 'digest' in detail['rule']
    assert digest_of(b'ba') in detail['reason']


def test_data_field_must_match_size() -> None:
    config = desc(m.OCI_CONFIG, b'abc', data=base64.b64encode(b'abcd').decode())
    (detail,) = rejected(image(config=config))
    assert detail['path'] == '/config/data'
    assert 'size' in detail['rule']


@pytest.mark.parametrize('data', ['not base64!', 'YWJj\n', 'YWI', 'YW=I', '-_8=', 5])
def test_data_field_must_be_standard_base64(data: Any) -> None:
    doc = image()
    doc['layers'][0]['data'] = data
    assert paths(rejected(doc)) == ['/layers/0/data']


def test_data_field_is_checked_on_index_children_and_subject() -> None:
    child = desc(m.OCI_MANIFEST, b'child', data=base64.b64encode(b'other').decode())
    assert paths(rejected(index(manifests=[child]), m.OCI_INDEX)) == ['/manifests/0/data']
    assert paths(rejected(image(subject=child))) == ['/subject/data']


# --- error reporting ---------------------------------------------------------------


def test_error_detail_names_rule_path_and_spec() -> None:
    doc = image()
    doc['layers'][1]['size'] = -5
    (detail,) = rejected(doc)
    assert detail['path'] == '/layers/1/size'
    assert detail['rule'] == 'size is an integer byte count between 0 and 2^63-1'
    assert detail['spec'] == 'image-spec descriptor.md §Properties: size'
    assert '-5' in detail['reason']


def test_missing_member_is_reported_at_its_own_path() -> None:
    doc = image()
    del doc['config']['digest']
    (detail,) = rejected(doc)
    assert detail['path'] == '/config/digest'
    assert detail['spec'] == 'image-spec descriptor.md §Properties'
    assert detail['reason'] == "'digest' is missing"


def test_every_failed_rule_is_a_separate_error_entry() -> None:
    doc = image(schemaVersion=1, annotations={'a': 1})
    doc['layers'][0]['digest'] = 'sha256:nope'
    doc['layers'][1]['size'] = -1
    with pytest.raises(RegistryError) as info:
        parse(doc)
    entries = info.value.entries
    assert sorted(e.detail['path'] for e in entries) == [
        '/annotations/a',
        '/layers/0/digest',
        '/layers/1/size',
        '/schemaVersion',
    ]
    body = json.loads(info.value.body())
    assert all(e['code'] == 'MANIFEST_INVALID' for e in body['errors'])
    assert all(e['message'].startswith('manifest invalid: ') for e in body['errors'])


def rejected_raw(body: bytes) -> list[dict]:
    with pytest.raises(RegistryError) as info:
        m.parse_manifest(body, m.OCI_MANIFEST)
    assert info.value.code is ErrorCode.MANIFEST_INVALID
    return [e.detail for e in info.value.entries]


def test_error_entries_are_capped() -> None:
    layers = [
        {'mediaType': LAYER_GZ, 'digest': 'sha256:bad', 'size': 1} for _ in range(200)
    ]
    details = rejected(image(layers=layers))
    assert len(details) == m.MAX_REPORTED
    assert details[-1]['omitted_failures'] == 'more failures not reported'


def test_a_million_wrong_items_are_rejected_without_validating_them_all() -> None:
    # 10^6 zeros fit in 4 MiB; reporting stops at the cap instead of producing
    # a million errors (which took minutes and stalled the event loop).
    body = json.dumps({'schemaVersion': 2, 'mediaType': m.OCI_MANIFEST,
                       'config': {'mediaType': m.OCI_CONFIG, 'size': 2,
                                  'digest': 'sha256:' + 'a' * 64},
                       'layers': [0] * 1_000_000}).encode()
    assert len(body) < 4 * 1024 * 1024
    with pytest.raises(RegistryError) as info:
        m.parse_manifest(body, m.OCI_MANIFEST)
    assert len(info.value.entries) == m.MAX_REPORTED


def test_duplicate_keys_are_manifest_invalid() -> None:
    # Parsers disagree on which duplicate wins: the registry must not validate one
    # document while a client reads another.
    body = b'{"schemaVersion": 2, "schemaVersion": 2, "config": {}, "layers": []}'
    details = rejected_raw(body)
    assert 'duplicate key' in details[0]['reason']


def test_huge_exponent_is_manifest_invalid_not_a_crash() -> None:
    text = re.sub(r'"size": \d+', '"size": 1e99999999999999999999', json.dumps(image()),
                  count=1)
    assert '1e9999' in text
    details = rejected_raw(text.encode())
    assert details[0]['rule'].startswith('the request body is a manifest')


def test_error_json_paths_escape_slash_and_tilde() -> None:
    assert paths(rejected(image(annotations={'a/b~c': 1}))) == ['/annotations/a~1b~0c']


# --- the parsed result ------------------------------------------------------------


def test_descriptor_fields_are_parsed() -> None:
    layer = desc(
        LAYER_GZ,
        b'l',
        urls=['https://mirror.example/l'],
        annotations={'k': 'v'},
        artifactType=ARTIFACT,
    )
    (parsed,) = parse(image(layers=[layer])).layers
    assert parsed == m.Descriptor(
        LAYER_GZ,
        digest_of(b'l'),
        1,
        ('https://mirror.example/l',),
        {'k': 'v'},
        ARTIFACT,
    )


def test_subject_is_parsed_for_image_manifest_and_index() -> None:
    subject = desc(m.OCI_MANIFEST, b'the subject')
    assert parse(image(subject=subject)).subject == m.Descriptor(
        m.OCI_MANIFEST, subject['digest'], subject['size']
    )
    parsed_index = parse(index(subject=subject), m.OCI_INDEX)
    assert parsed_index.subject is not None
    assert parsed_index.subject.digest == subject['digest']
    assert parse(image()).subject is None


def test_artifact_type_falls_back_to_config_media_type() -> None:
    doc = image(config=desc(ARTIFACT, b'cfg'))
    assert parse(doc).artifact_type == ARTIFACT
    assert parse(image()).artifact_type == m.OCI_CONFIG


def test_artifact_type_field_wins_over_config_media_type() -> None:
    doc = image(artifactType=ARTIFACT, config=desc(EMPTY_JSON, b'{}'))
    assert parse(doc).artifact_type == ARTIFACT


def test_empty_artifact_type_counts_as_absent() -> None:
    assert parse(image(artifactType='')).artifact_type == m.OCI_CONFIG
    assert parse(index(artifactType=''), m.OCI_INDEX).artifact_type is None


def test_index_artifact_type_absent_when_not_set() -> None:
    assert parse(index(), m.OCI_INDEX).artifact_type is None


def test_index_artifact_type_taken_from_field() -> None:
    assert parse(index(artifactType=ARTIFACT), m.OCI_INDEX).artifact_type == ARTIFACT


def test_manifest_annotations_are_parsed() -> None:
    notes = {'org.opencontainers.image.created': '2024-01-01T00:00:00Z'}
    assert parse(image(annotations=notes)).annotations == notes
    assert parse(index(annotations=notes), m.OCI_INDEX).annotations == notes
    assert parse(image()).annotations is None


def test_required_blobs_skips_nondistributable_layers() -> None:
    # The redesigned suite's "non-distributable-layers" image: two non-distributable
    # layers with urls that are never uploaded, then one ordinary uploaded layer.
    foreign = [
        desc(ND_LAYER_GZ, b'nd one', urls=['https://store.example.com/blobs/sha256/1']),
        desc(ND_LAYER, b'nd two', urls=['https://store.example.com/blobs/sha256/2']),
    ]
    ordinary = desc(LAYER_GZ, b'ordinary')
    parsed = parse(image(layers=[*foreign, ordinary]))
    assert [d.digest for d in parsed.required_blobs()] == [
        parsed.config.digest if parsed.config else '',
        ordinary['digest'],
    ]


def test_required_blobs_skips_docker_foreign_layers() -> None:
    foreign = desc(DOCKER_FOREIGN, b'windows base', urls=['https://example.com/base'])
    parsed = parse(
        docker_manifest(layers=[foreign, desc(DOCKER_LAYER, b'top')]), m.DOCKER_MANIFEST
    )
    assert [d.media_type for d in parsed.required_blobs()] == [
        DOCKER_CONFIG,
        DOCKER_LAYER,
    ]


def test_required_blobs_keeps_ordinary_layers_that_have_urls() -> None:
    layer = desc(LAYER_GZ, b'mirrored', urls=['https://mirror.example/x'])
    parsed = parse(image(layers=[layer]))
    assert layer['digest'] in [d.digest for d in parsed.required_blobs()]


def test_index_requires_no_blobs() -> None:
    parsed = parse(index(), m.OCI_INDEX)
    assert parsed.required_blobs() == ()
    assert parsed.config is None
    assert parsed.layers == ()


def test_parsed_manifest_is_frozen() -> None:
    parsed = parse(image())
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.media_type = m.OCI_INDEX  # type: ignore[misc]


def test_manifest_types_are_the_four_manifest_formats() -> None:
    assert (
        frozenset({m.OCI_MANIFEST, m.OCI_INDEX, m.DOCKER_MANIFEST, m.DOCKER_LIST})
        == m.MANIFEST_TYPES
    )
    assert m.OCI_CONFIG not in m.MANIFEST_TYPES


# --- check(), for the CLI ---------------------------------------------------------


def test_check_returns_empty_list_for_valid_documents() -> None:
    assert m.check(encode(image())) == []
    assert m.check(encode(index()), m.OCI_INDEX) == []


def test_check_reports_every_failure_as_a_dict() -> None:
    doc = image(layers=None)
    doc['config']['size'] = 'big'
    failures = m.check(encode(doc))
    assert sorted(f['path'] for f in failures) == ['/config/size', '/layers']
    assert all({'rule', 'path', 'spec'} <= f.keys() for f in failures)


def test_check_reports_unparseable_body_and_unsupported_type() -> None:
    assert [f['path'] for f in m.check(b'{')] == ['']
    (failure,) = m.check(
        encode(image()), 'application/vnd.docker.distribution.manifest.v1+json'
    )
    assert 'schema 1' in failure['reason']


def test_check_is_not_capped() -> None:
    layers = [{'mediaType': LAYER_GZ, 'digest': 'sha256:bad', 'size': 1} for _ in range(80)]
    assert len(m.check(encode(image(layers=layers)))) == 80


IMAGE_CONFIG = {
    'created': '2024-05-01T12:30:00.5+02:00',
    'author': 'someone',
    'architecture': 'arm64',
    'variant': 'v8',
    'os': 'linux',
    'config': {
        'Env': ['A=b'],
        'Entrypoint': None,
        'Labels': {'k': 'v'},
        'User': '1000',
    },
    'rootfs': {'type': 'layers', 'diff_ids': [digest_of(b'uncompressed')]},
    'history': [{'created_by': 'step', 'empty_layer': True}],
}


def test_check_validates_image_config() -> None:
    assert m.check(encode(IMAGE_CONFIG), m.OCI_CONFIG) == []
    # Recognised without a Content-Type: rootfs and no layers.
    assert m.check(encode(IMAGE_CONFIG)) == []


CONFIG_SPEC = 'image-spec config.md §Properties'


@pytest.mark.parametrize(
    ('change', 'path', 'spec'),
    [
        ({'architecture': None}, '/architecture', CONFIG_SPEC),
        ({'rootfs': None}, '/rootfs', CONFIG_SPEC),
        ({'rootfs': {'type': 'squash', 'diff_ids': []}}, '/rootfs/type', CONFIG_SPEC),
        (
            {'rootfs': {'type': 'layers', 'diff_ids': ['sha256:short']}},
            '/rootfs/diff_ids/0',
            'image-spec descriptor.md §Registered algorithms',
        ),
        ({'created': 'yesterday'}, '/created', CONFIG_SPEC),
        ({'history': [{'empty_layer': 'yes'}]}, '/history/0/empty_layer', CONFIG_SPEC),
        ({'config': {'Env': 'A=b'}}, '/config/Env', CONFIG_SPEC),
    ],
)
def test_check_reports_image_config_rule_failures(
    change: dict[str, Any], path: str, spec: str
) -> None:
    doc = {**IMAGE_CONFIG, **change}
    doc = {k: v for k, v in doc.items() if v is not None}
    failures = m.check(encode(doc), m.OCI_CONFIG)
    assert [f['path'] for f in failures] == [path]
    assert failures[0]['spec'].startswith(spec)


def test_image_config_is_never_accepted_as_a_manifest() -> None:
    (detail,) = rejected(IMAGE_CONFIG, m.OCI_CONFIG)
    assert 'supported media type' in detail['rule']
