"""The image-spec rules beyond the schemas (oci_ref.image_rules) and ``--strict``.

Test ids follow schemas/README.md: ``mNN`` the MUSTs, ``s_N`` the strict rules S-N.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from typing import Any

import pytest

from oci_ref import manifest as m
from oci_ref.errors import ErrorCode, RegistryError

LAYER = 'application/vnd.oci.image.layer.v1.tar+gzip'
EMPTY = 'application/vnd.oci.empty.v1+json'
ARTIFACT = 'application/vnd.example.thing.v1'
EMPTY_DIGEST = 'sha256:' + hashlib.sha256(b'{}').hexdigest()
UNREGISTERED = [
    'multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8',
    'sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564',
    'sha256+b64:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564=',
    'md5:' + 'a' * 32, 'sha384:' + 'a' * 96, 'x.y_z-w:ABC=',
]


def desc(media_type: str, content: bytes, **extra: Any) -> dict[str, Any]:
    return {'mediaType': media_type, 'size': len(content),
            'digest': 'sha256:' + hashlib.sha256(content).hexdigest(), **extra}


def image(**extra: Any) -> dict[str, Any]:
    """A manifest every rule, strict ones included, accepts."""
    return {
        'schemaVersion': 2, 'mediaType': m.OCI_MANIFEST,
        'config': desc(m.OCI_CONFIG, b'{"architecture":"amd64","os":"linux"}'),
        'layers': [desc(LAYER, b'layer', urls=['https://mirror.example/l'])],
        'subject': desc(m.OCI_MANIFEST, b'subject'),
        'annotations': {'org.opencontainers.image.created': '2024-01-02T03:04:05Z',
                        'com.example.key': ''},
        **extra,
    }


def artifact(**extra: Any) -> dict[str, Any]:
    return {'schemaVersion': 2, 'mediaType': m.OCI_MANIFEST, 'artifactType': ARTIFACT,
            'config': desc(EMPTY, b'{}', data='e30='), 'layers': [desc(ARTIFACT, b'x')],
            **extra}


def index(**extra: Any) -> dict[str, Any]:
    child = desc(m.OCI_MANIFEST, b'child', platform={'architecture': 'arm64', 'os': 'linux',
                                                     'variant': 'v8'})
    return {'schemaVersion': 2, 'mediaType': m.OCI_INDEX, 'manifests': [child], **extra}


def body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def failures(doc: Any, content_type: str | None = None, *, strict: bool = False
             ) -> list[dict[str, Any]]:
    raw = doc if isinstance(doc, bytes) else body(doc)
    return m.check(raw, content_type, strict=strict)


def refused(doc: Any, content_type: str | None = None, *, strict: bool = False
            ) -> list[dict[str, Any]]:
    """The server's answer: 400 MANIFEST_INVALID, one entry per failed rule."""
    raw = doc if isinstance(doc, bytes) else body(doc)
    with pytest.raises(RegistryError) as info:
        m.parse_manifest(raw, content_type, strict=strict)
    assert info.value.status == 400
    assert {e.code for e in info.value.entries} == {ErrorCode.MANIFEST_INVALID}
    return [e.detail for e in info.value.entries]


def test_the_baseline_documents_pass_strict() -> None:
    for doc, ct in ((image(), None), (artifact(), None), (index(), m.OCI_INDEX)):
        assert failures(doc, ct, strict=True) == []


# -- m01-m03: RFC 6838 media types ----------------------------------------------------


def slots() -> list[tuple[dict[str, Any], str | None, str]]:
    out: list[tuple[dict[str, Any], str | None, str]] = []
    for slot in ('/config', '/layers/0', '/subject'):
        out.append((image(), None, slot))
    out.append((index(), m.OCI_INDEX, '/manifests/0'))
    out.append((index(subject=desc(m.OCI_MANIFEST, b's')), m.OCI_INDEX, '/subject'))
    return out


def at(doc: dict[str, Any], pointer: str) -> dict[str, Any]:
    node: Any = doc
    for part in pointer.strip('/').split('/'):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node  # type: ignore[no-any-return]


@pytest.mark.parametrize('value', ['invalid', '', 'text/', 'a/b\n', 'x' * 128 + '/y'])
@pytest.mark.parametrize(('doc', 'ct', 'slot'), slots(), ids=lambda v: str(v)[:14])
def test_m01_descriptor_media_type_is_rfc6838(doc: dict[str, Any], ct: str | None,
                                              slot: str, value: str) -> None:
    doc = copy.deepcopy(doc)
    at(doc, slot)['mediaType'] = value
    (detail,) = refused(doc, ct)
    assert detail['path'] == f'{slot}/mediaType'
    assert 'RFC 6838' in detail['rule'] and '§4.2' in detail['spec']
    assert detail['spec'].startswith('image-spec descriptor.md')


@pytest.mark.parametrize('content_type', [m.OCI_MANIFEST, None, 'application/json'])
@pytest.mark.parametrize('value', ['invalid', ''])
def test_m02_manifest_media_type_is_rfc6838(content_type: str | None, value: str) -> None:
    (detail,) = refused(image(mediaType=value), content_type)
    assert detail['path'] == '/mediaType'
    assert 'RFC 6838' in detail['rule'] and '§4.2' in detail['spec']


@pytest.mark.parametrize(('doc', 'ct', 'pointer'), [
    (image(artifactType='invalid'), None, '/artifactType'),
    (index(artifactType='no slash'), m.OCI_INDEX, '/artifactType'),
    (image(subject=desc(m.OCI_MANIFEST, b's', artifactType='a/b/c')), None,
     '/subject/artifactType'),
])
def test_m03_artifact_type_is_rfc6838(doc: dict[str, Any], ct: str | None,
                                      pointer: str) -> None:
    (detail,) = refused(doc, ct)
    assert detail['path'] == pointer and 'RFC 6838' in detail['rule']


def test_m03_empty_artifact_type_is_absent_by_default_and_refused_in_strict() -> None:
    # distribution-spec §Listing Referrers reads "empty or missing" alike.
    assert failures(image(artifactType='')) == []
    (detail,) = failures(image(artifactType=''), strict=True)
    assert detail['rule'].startswith('S-13') and detail['mode'] == 'strict'


def test_m01_media_type_parameters_pass_by_default_and_fail_strict() -> None:
    doc = image(layers=[desc('text/plain; charset=utf-8', b'hello')])
    assert failures(doc) == []
    (detail,) = failures(doc, strict=True)
    assert detail['path'] == '/layers/0/mediaType' and detail['rule'].startswith('S-11')


# -- m04-m06: digests ------------------------------------------------------------------


@pytest.mark.parametrize('digest', UNREGISTERED)
def test_m04_unregistered_algorithms_pass_validation(digest: str) -> None:
    doc = image()
    doc['layers'][0]['digest'] = digest
    doc['subject']['digest'] = digest
    parsed = m.parse_manifest(body(doc), None)
    assert [d.digest for d in parsed.required_blobs()][1:] == [digest]
    child = index()
    child['manifests'][0]['digest'] = digest
    assert m.parse_manifest(body(child), m.OCI_INDEX).manifests[0].digest == digest
    config = {'architecture': 'amd64', 'os': 'linux',
              'rootfs': {'type': 'layers', 'diff_ids': [digest]}}
    assert failures(config, m.OCI_CONFIG) == []


@pytest.mark.parametrize('digest', [
    'sha256:' + 'A' * 64, 'sha512:' + 'a' * 64, 'blake3:' + 'a' * 63, 'blake3:' + 'G' * 64,
    'sha256', 'Sha256:' + 'a' * 64, 'a:b:c', 'multihash+:x', 'x+:y', 'sha256:a/b',
])
def test_m05_registered_encodings_and_the_grammar_are_musts(digest: str) -> None:
    doc = image()
    doc['config']['digest'] = digest
    assert [d['path'] for d in refused(doc)] == ['/config/digest']


def test_m05_blake3_with_its_encoding_is_accepted() -> None:
    doc = image()
    doc['layers'][0]['digest'] = 'blake3:' + 'a' * 64
    assert failures(doc) == []


def test_m06_data_of_an_unverifiable_algorithm_is_checked_for_size() -> None:
    doc = image()
    data = base64.b64encode(b'layer').decode()
    doc['layers'][0].update(digest=UNREGISTERED[0], data=data)
    assert failures(doc) == []
    doc['layers'][0]['size'] = 4
    (detail,) = refused(doc)
    assert detail['path'] == '/layers/0/data' and 'size' in detail['rule']


# -- m07: urls ----------------------------------------------------------------------------


@pytest.mark.parametrize('url', ['not a uri', 'example.com/x', 'https://h/%zz', ''])
def test_m07_urls_entries_conform_to_rfc3986(url: str) -> None:
    doc = image()
    doc['layers'][0]['urls'] = ['https://ok.example/x', url]
    (detail,) = refused(doc)
    assert detail['path'] == '/layers/0/urls/1' and 'RFC 3986' in detail['rule']


# -- m08: I-JSON strings --------------------------------------------------------------


@pytest.mark.parametrize(('raw', 'pointer'), [
    (b'"artifactType": "\\ud800"', '/artifactType'),
    (b'"annotations": {"com.example.k": "a\\udc00"}', '/annotations/com.example.k'),
    (b'"annotations": {"\\ud800": "v"}', '/annotations/\\ud800'),
    (b'"x": [[1, {"y": "\\uDFFF"}]]', '/x/0/1/y'),
])
def test_m08_lone_surrogates_are_manifest_invalid(raw: bytes, pointer: str) -> None:
    text = body(without(image(), 'annotations'))[:-1] + b', ' + raw + b'}'
    (detail,) = refused(text)
    assert detail['path'] == pointer
    assert 'RFC 8259 §8.2' in detail['spec'] and 'RFC 7493 §2.1' in detail['spec']


def test_m08_lone_surrogate_in_a_descriptor_media_type() -> None:
    text = body(image()).replace(b'"application/vnd.oci.image.config.v1+json"',
                                 b'"\\ud800"', 1)
    (detail,) = refused(text)
    assert detail['path'] == '/config/mediaType'


# -- m09: config.md optional fields may be null -----------------------------------------


def test_m09_optional_config_fields_may_be_null() -> None:
    config = {'architecture': 'amd64', 'os': 'linux',
              'rootfs': {'type': 'layers', 'diff_ids': []}}
    for name in ('created', 'author', 'os.version', 'os.features', 'variant', 'config',
                 'history'):
        assert failures({**config, name: None}, m.OCI_CONFIG) == [], name
    inner = {n: None for n in ('User', 'ExposedPorts', 'Env', 'Entrypoint', 'Cmd',
                               'Volumes', 'WorkingDir', 'Labels', 'StopSignal',
                               'ArgsEscaped', 'Memory', 'MemorySwap', 'CpuShares',
                               'Healthcheck')}
    history = [{n: None for n in ('created', 'author', 'created_by', 'comment',
                                  'empty_layer')}]
    assert failures({**config, 'config': inner, 'history': history}, m.OCI_CONFIG) == []
    (detail,) = failures({**config, 'config': {'ArgsEscaped': 'yes'}}, m.OCI_CONFIG)
    assert detail['path'] == '/config/ArgsEscaped'


def test_m10_annotations_are_absent_or_a_map_never_null() -> None:
    assert [d['path'] for d in refused(image(annotations=None))] == ['/annotations']
    assert failures(image(annotations={})) == []


# -- strict: S-1 … S-15 ------------------------------------------------------------------


def without(doc: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != key}


def layer0(**change: Any) -> dict[str, Any]:
    doc = image()
    doc['layers'][0].update(change)
    return doc


STRICT_CASES: list[tuple[str, dict[str, Any], str | None, str]] = [
    ('S-1', without(image(), 'mediaType'), m.OCI_MANIFEST, '/mediaType'),
    ('S-1', without(index(), 'mediaType'), m.OCI_INDEX, '/mediaType'),
    ('S-2', image(layers=[]), None, '/layers'),
    ('S-3', without(artifact(), 'artifactType'), None, '/artifactType'),
    ('S-4', artifact(layers=[desc(ARTIFACT, b'')]), None, '/layers/0/size'),
    ('S-5', artifact(config=desc(EMPTY, b'{ }')), None, '/config'),
    ('S-6', index(manifests=[desc(m.OCI_MANIFEST, b'c')]), m.OCI_INDEX,
     '/manifests/0/platform'),
    ('S-7', index(manifests=[desc(LAYER, b'c')]), m.OCI_INDEX, '/manifests/0/mediaType'),
    ('S-8', index(manifests=[desc(m.OCI_MANIFEST, b'c', platform={
        'architecture': 'unknown', 'os': 'linux'})]), m.OCI_INDEX,
     '/manifests/0/platform/architecture'),
    ('S-9', layer0(digest='sha512:' + 'a' * 128), None, '/layers/0/digest'),
    ('S-9', layer0(digest=UNREGISTERED[0]), None, '/layers/0/digest'),
    ('S-10', layer0(urls=['ftp://mirror.example/l']), None, '/layers/0/urls/0'),
    ('S-11', layer0(mediaType='a/' + 'b' * 65), None, '/layers/0/mediaType'),
    ('S-12', image(annotations={'myKey': 'v'}), None, '/annotations/myKey'),
    ('S-12', layer0(annotations={'title': 'v'}), None, '/layers/0/annotations/title'),
    ('S-13', index(artifactType=''), m.OCI_INDEX, '/artifactType'),
    ('S-14', layer0(size=2**53), None, '/layers/0/size'),
    ('S-15', image(annotations={'org.opencontainers.image.created': 'yesterday'}), None,
     '/annotations/org.opencontainers.image.created'),
    ('S-15', image(annotations={'org.opencontainers.image.madeup': 'x'}), None,
     '/annotations/org.opencontainers.image.madeup'),
]


@pytest.mark.parametrize(('rule', 'doc', 'ct', 'pointer'), STRICT_CASES,
                         ids=[f'{c[0]}-{c[3]}' for c in STRICT_CASES])
def test_strict_rule(rule: str, doc: dict[str, Any], ct: str | None, pointer: str) -> None:
    assert failures(doc, ct) == []  # the default accepts it
    found = failures(doc, ct, strict=True)
    assert [(f['rule'].split(':')[0], f['path']) for f in found] == [(rule, pointer)]
    detail = refused(doc, ct, strict=True)[0]
    assert detail['mode'] == 'strict'
    assert detail['spec'].startswith('image-spec ') and '§' in detail['spec']
    assert detail['reason']


def test_strict_config_platform_values() -> None:
    config = {'architecture': 'x86', 'os': 'linux',
              'rootfs': {'type': 'layers', 'diff_ids': []}}
    (detail,) = failures(config, m.OCI_CONFIG, strict=True)
    assert detail['rule'].startswith('S-8') and detail['path'] == '/architecture'


def test_strict_is_judged_only_after_the_musts() -> None:
    doc = image(schemaVersion=1, layers=[])
    assert [d['path'] for d in failures(doc, strict=True)] == ['/schemaVersion']


# -- MUSTs the older tests covered only for one document type --------------------------


CONFIG_DOC = {'architecture': 'amd64', 'os': 'linux',
              'rootfs': {'type': 'layers', 'diff_ids': []}}


@pytest.mark.parametrize(('doc', 'ct', 'pointer'), [
    ({k: v for k, v in CONFIG_DOC.items() if k != 'os'}, m.OCI_CONFIG, '/os'),
    ({**CONFIG_DOC, 'config': {'Labels': {'k': 1}}}, m.OCI_CONFIG, '/config/Labels/k'),
    ({**CONFIG_DOC, 'rootfs': {'type': 'layers'}}, m.OCI_CONFIG, '/rootfs/diff_ids'),
    (index(schemaVersion=3), m.OCI_INDEX, '/schemaVersion'),
    (index(mediaType=m.OCI_MANIFEST), None, '/manifests'),
    (index(annotations={'k': None}), m.OCI_INDEX, '/annotations/k'),
], ids=['m_c2-os', 'm_c6-labels', 'm_c5-diff-ids', 'm_i1-schema-version',
        'm_i2-media-type', 'm_i9-annotations'])
def test_m_required_members_and_types(doc: dict[str, Any], ct: str | None,
                                      pointer: str) -> None:
    assert pointer in [f['path'] for f in failures(doc, ct)]
