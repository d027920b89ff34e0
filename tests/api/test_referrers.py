"""The referrers API (end-12, registry-checklist §1.9): listing, filtering by
artifactType, pagination, the subject header, and deletes.

Tests are named after the rule they prove (§1 ``rNN``, §3.11 ``legacy``/``new``).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.api.listing_support import (
    ANNOTATION,
    INVALID_N,
    TYPE_A,
    TYPE_B,
    TYPE_INDEX,
    app_client,
    by_digest,
    follow,
    next_link,
    push_artifact,
    push_index,
    referrers,
    subject_of,
)
from tests.support import (
    EMPTY_JSON,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    SPEC_CODES,
    assert_error,
    descriptor,
    digest,
    image_manifest,
    push_blob,
    push_image,
)

# -- §1.9 Referrers ------------------------------------------------------------------


def test_r58_referrers_of_unknown_repo_is_200_empty_index(client, repo):
    r = referrers(client, repo, digest(b'anything'))
    assert r.json()['manifests'] == []
    assert client.get('/v2/').status_code == 200


def test_r58_oras_probe_with_the_zero_digest_is_200(client, repo):
    r = referrers(client, repo, 'sha256:' + '0' * 64)
    assert r.json()['manifests'] == []
    push_image(client, repo, 'v1')
    assert referrers(client, repo, 'sha256:' + '0' * 64).json()['manifests'] == []


def test_new_referrers_before_anything_is_pushed_is_200_index(client, repo):
    r = client.get(f'/v2/{repo}/referrers/{digest(b"random", "sha512")}')
    assert r.status_code == 200
    body = r.json()
    assert body['schemaVersion'] == 2
    assert body['mediaType'] == OCI_INDEX
    assert body['manifests'] == []


@pytest.mark.parametrize('bad', ['sha256:abc', 'notadigest', 'sha256:' + 'A' * 64,
                                 'md5:' + 'a' * 32, 'sha512:' + 'a' * 64, 'sha256:'])
def test_r59_malformed_digest_is_400_digest_invalid(client, repo, bad):
    push_image(client, repo, 'v1')
    assert_error(client.get(f'/v2/{repo}/referrers/{bad}'), 400, 'DIGEST_INVALID')


@pytest.mark.parametrize('n', INVALID_N)
def test_r58_referrers_with_a_garbage_n_is_never_a_server_error(client, repo, n):
    """oras may add n= to referrers requests; the spec defines no n here, so a
    garbage value is either ignored (200 index) or refused (400 envelope)."""
    subject = subject_of(client, repo)
    r = client.get(f'/v2/{repo}/referrers/{subject["digest"]}?n={n}')
    assert r.status_code in (200, 400), (r.status_code, r.content)
    if r.status_code == 200:
        assert r.headers['content-type'] == OCI_INDEX
    else:
        assert r.json()['errors'][0]['code'] in SPEC_CODES


def test_r60_referrers_content_type_is_exactly_the_oci_index(client, repo):
    subject = subject_of(client, repo)
    push_artifact(client, repo, subject, artifact_type='application/x.a')
    r = client.get(f'/v2/{repo}/referrers/{subject["digest"]}',
                   headers={'Accept': 'application/json'})
    assert r.status_code == 200
    assert r.headers['content-type'] == OCI_INDEX
    body = r.json()
    assert body['schemaVersion'] == 2
    assert body['mediaType'] == OCI_INDEX
    assert len(body['manifests']) == 1


def test_r61_entries_describe_referrers_in_the_same_repository_only(client, repo):
    subject = subject_of(client, repo)
    other = f'{repo}-other'
    push_image(client, other, 'subject', seed='subject-subject')  # same subject bytes
    mine, mine_body = push_artifact(client, repo, subject, artifact_type='application/x.a')
    push_artifact(client, other, subject, artifact_type='application/x.b')
    unrelated = subject_of(client, repo, 'unrelated')
    push_artifact(client, repo, unrelated, artifact_type='application/x.c',
                  layer=b'other payload')
    entries = by_digest(referrers(client, repo, subject['digest']))
    assert set(entries) == {mine}
    assert entries[mine] == {'mediaType': OCI_MANIFEST, 'digest': mine,
                             'size': len(mine_body), 'artifactType': 'application/x.a'}


def test_r62_artifact_type_is_the_manifest_artifact_type(client, repo):
    subject = subject_of(client, repo)
    d, _ = push_artifact(client, repo, subject,
                         artifact_type='application/vnd.example.sbom',
                         config_type=EMPTY_JSON)
    entry = by_digest(referrers(client, repo, subject['digest']))[d]
    assert entry['artifactType'] == 'application/vnd.example.sbom'


@pytest.mark.parametrize('artifact_type', [None, ''])
def test_r62_artifact_type_falls_back_to_config_media_type(client, repo, artifact_type):
    subject = subject_of(client, repo)
    d, _ = push_artifact(client, repo, subject, artifact_type=artifact_type,
                         config_type=TYPE_A, config=b'NHL Peanut Butter on my NHL bagel')
    entry = by_digest(referrers(client, repo, subject['digest']))[d]
    assert entry['artifactType'] == TYPE_A
    r = referrers(client, repo, subject['digest'], f'?artifactType={TYPE_A}')
    assert set(by_digest(r)) == {d}


def test_r62_index_without_artifact_type_omits_it(client, repo):
    subject = subject_of(client, repo)
    child = push_artifact(client, repo, None, artifact_type='application/x.child')
    for artifact_type in (None, ''):
        extra = {} if artifact_type is None else {'artifactType': artifact_type}
        d, body = push_index(client, repo, [child], subject, **extra)
        entry = by_digest(referrers(client, repo, subject['digest']))[d]
        assert 'artifactType' not in entry
        assert entry['mediaType'] == OCI_INDEX
        assert entry['size'] == len(body)


def test_r62_index_with_subject_is_listed_with_its_artifact_type(client, repo):
    subject = subject_of(client, repo)
    child = push_artifact(client, repo, None, artifact_type='application/x.child')
    d, body = push_index(client, repo, [child], subject, artifactType=TYPE_INDEX,
                         annotations={ANNOTATION: 'test index'})
    entries = by_digest(referrers(client, repo, subject['digest']))
    assert entries == {d: {'mediaType': OCI_INDEX, 'digest': d, 'size': len(body),
                           'artifactType': TYPE_INDEX,
                           'annotations': {ANNOTATION: 'test index'}}}


def test_r63_annotations_are_carried_exactly(client, repo):
    subject = subject_of(client, repo)
    annotations = {'org.opencontainers.image.created': '2022-01-01T14:42:55Z',
                   'org.example.sbom.format': 'json', 'org.example.empty': ''}
    d, _ = push_artifact(client, repo, subject, artifact_type='application/x.sbom',
                         annotations=annotations)
    plain, _ = push_artifact(client, repo, subject, artifact_type='application/x.sig',
                             layer=b'no annotations')
    entries = by_digest(referrers(client, repo, subject['digest']))
    assert entries[d]['annotations'] == annotations
    assert entries[plain].get('annotations', {}) == {}


def test_r64_no_match_is_an_empty_manifest_list(client, repo):
    subject = subject_of(client, repo)
    push_artifact(client, repo, subject, artifact_type='application/x.a')
    r = referrers(client, repo, subject['digest'], '?artifactType=application/x.none')
    assert r.json()['manifests'] == []
    other = subject_of(client, repo, 'lonely')
    assert referrers(client, repo, other['digest']).json()['manifests'] == []


def test_r65_referrers_paginate_with_link_when_many(tmp_path):
    c = app_client(tmp_path, referrers_page_max=2)
    name = 'many/referrers'
    subject = subject_of(c, name)
    pushed = {push_artifact(c, name, subject, artifact_type='application/x.a',
                            layer=f'payload {i}'.encode())[0] for i in range(5)}
    r = referrers(c, name, subject['digest'])
    assert len(r.json()['manifests']) == 2
    link = next_link(r)
    assert link is not None and link.startswith(f'/v2/{name}/referrers/{subject["digest"]}')
    items, pages = follow(c, f'/v2/{name}/referrers/{subject["digest"]}', 'manifests')
    assert pages == 3
    assert [e['digest'] for e in items] == sorted(e['digest'] for e in items)
    assert {e['digest'] for e in items} == pushed
    assert len(items) == 5


def test_r65_filtered_pagination_keeps_the_filter(tmp_path):
    c = app_client(tmp_path, referrers_page_max=2)
    name = 'many/filtered'
    subject = subject_of(c, name)
    wanted = {push_artifact(c, name, subject, artifact_type=TYPE_A,
                            layer=f'a {i}'.encode())[0] for i in range(3)}
    for i in range(3):
        push_artifact(c, name, subject, artifact_type=TYPE_B, layer=f'b {i}'.encode())
    start = f'/v2/{name}/referrers/{subject["digest"]}?artifactType={TYPE_A}'
    r = c.get(start)
    assert r.headers['oci-filters-applied'] == 'artifactType'
    link = next_link(r)
    assert link is not None
    assert parse_qs(urlsplit(link).query)['artifactType'] == [TYPE_A]
    second = c.get(link)
    assert second.headers['oci-filters-applied'] == 'artifactType'
    items, _ = follow(c, start, 'manifests')
    assert {e['digest'] for e in items} == wanted
    assert all(e['artifactType'] == TYPE_A for e in items)


def test_r66_artifact_type_filter_sets_oci_filters_applied(client, repo):
    subject = subject_of(client, repo)
    a, _ = push_artifact(client, repo, subject, artifact_type=TYPE_A)
    b, _ = push_artifact(client, repo, subject, artifact_type=TYPE_B, layer=b'b')
    r = referrers(client, repo, subject['digest'], f'?artifactType={TYPE_A}')
    assert r.headers['oci-filters-applied'] == 'artifactType'
    assert set(by_digest(r)) == {a}
    unfiltered = referrers(client, repo, subject['digest'])
    assert 'oci-filters-applied' not in unfiltered.headers
    assert set(by_digest(unfiltered)) == {a, b}


@pytest.mark.parametrize('encode', ['raw', 'percent', 'percent-plus-only'])
def test_r66_artifact_type_filter_with_plus_in_the_query(client, repo, encode):
    subject = subject_of(client, repo)
    wanted_type = 'application/vnd.example.sbom+json'
    d, _ = push_artifact(client, repo, subject, artifact_type=wanted_type)
    push_artifact(client, repo, subject, artifact_type='application/vnd.example.sbom',
                  layer=b'without suffix')
    value = {'raw': wanted_type,
             'percent': 'application%2Fvnd.example.sbom%2Bjson',
             'percent-plus-only': 'application/vnd.example.sbom%2Bjson'}[encode]
    r = referrers(client, repo, subject['digest'], f'?artifactType={value}')
    assert r.headers['oci-filters-applied'] == 'artifactType'
    assert set(by_digest(r)) == {d}


def test_r67_referrers_pushed_before_their_subject_are_listed(client, repo):
    config = json.dumps({'architecture': 'amd64', 'os': 'linux', 'late': True}).encode()
    layer = b'late subject layer'
    subject_body = image_manifest(config, [layer])
    subject = {'mediaType': OCI_MANIFEST, 'digest': digest(subject_body),
               'size': len(subject_body)}
    early, _ = push_artifact(client, repo, subject, artifact_type='application/x.early')
    assert set(by_digest(referrers(client, repo, subject['digest']))) == {early}
    push_blob(client, repo, config)
    push_blob(client, repo, layer)
    r = client.put(f'/v2/{repo}/manifests/late', content=subject_body,
                   headers={'Content-Type': OCI_MANIFEST})
    assert r.status_code == 201
    late, _ = push_artifact(client, repo, subject, artifact_type='application/x.late',
                            layer=b'after')
    assert set(by_digest(referrers(client, repo, subject['digest']))) == {early, late}


def test_r67_deleted_referrer_leaves_the_list(client, repo):
    subject = subject_of(client, repo)
    keep, _ = push_artifact(client, repo, subject, artifact_type='application/x.keep')
    drop, _ = push_artifact(client, repo, subject, artifact_type='application/x.drop',
                            layer=b'drop me')
    assert set(by_digest(referrers(client, repo, subject['digest']))) == {keep, drop}
    assert client.delete(f'/v2/{repo}/manifests/{drop}').status_code == 202
    assert set(by_digest(referrers(client, repo, subject['digest']))) == {keep}


def test_r67_referrers_of_a_sha512_subject(client, repo):
    config = b'{"sha512": "subject"}'
    push_blob(client, repo, config)
    subject_body = image_manifest(config, [])
    d512 = digest(subject_body, 'sha512')
    r = client.put(f'/v2/{repo}/manifests/{d512}', content=subject_body,
                   headers={'Content-Type': OCI_MANIFEST})
    assert r.status_code == 201
    subject = {'mediaType': OCI_MANIFEST, 'digest': d512, 'size': len(subject_body)}
    d, _ = push_artifact(client, repo, subject, artifact_type='application/x.a')
    assert set(by_digest(referrers(client, repo, d512))) == {d}


def test_legacy_referrers_scenario_five_entries_one_annotation_each(client, repo):
    """The legacy suite: two config-typed and two layer-typed artifacts and one index,
    all pushed before their subject, each with exactly one annotation; a filter on
    type A gives 2; an artifact of a never-pushed subject is not listed."""
    config = json.dumps({'architecture': 'amd64', 'os': 'linux'}).encode()
    layer = b'legacy subject layer'
    subject_body = json.dumps({
        'schemaVersion': 2, 'mediaType': OCI_MANIFEST,
        'config': descriptor(OCI_CONFIG, config), 'layers': [descriptor(OCI_LAYER, layer)],
    }, indent='\t').encode()
    subject = {'mediaType': OCI_MANIFEST, 'digest': digest(subject_body),
               'size': len(subject_body)}
    missing_subject = {'mediaType': OCI_MANIFEST, 'digest': digest(b'manifests[3]'),
                       'size': 12}
    blob_a = b'NHL Peanut Butter on my NHL bagel'
    blob_b = b'NBA Strawberry Jam on my NBA croissant'
    for blob in (b'{}', blob_a, blob_b):
        push_blob(client, repo, blob)
    empty = descriptor(EMPTY_JSON, b'{}')

    def put_tabbed(doc: dict[str, Any], media_type: str = OCI_MANIFEST
                   ) -> tuple[str, bytes]:
        body = json.dumps(doc, indent='\t').encode()
        r = client.put(f'/v2/{repo}/manifests/{digest(body)}', content=body,
                       headers={'Content-Type': media_type})
        assert r.status_code == 201, r.content
        assert r.headers['oci-subject'] == doc['subject']['digest']
        return digest(body), body

    def artifact(config_desc: dict[str, Any], layer_desc: dict[str, Any], note: str | None,
                 artifact_type: str | None = None,
                 subj: dict[str, Any] = subject) -> dict[str, Any]:
        doc: dict[str, Any] = {'schemaVersion': 2, 'mediaType': OCI_MANIFEST}
        if artifact_type:
            doc['artifactType'] = artifact_type
        doc |= {'config': config_desc, 'subject': subj, 'layers': [layer_desc]}
        if note is not None:
            doc['annotations'] = {ANNOTATION: note}
        return doc

    a_config = put_tabbed(artifact(descriptor(TYPE_A, blob_a), empty, 'test config a'))
    put_tabbed(artifact(descriptor(TYPE_B, blob_b), empty, 'test config b'))
    a_layer = put_tabbed(artifact(empty, descriptor(TYPE_A, blob_a), 'test layer a',
                                  TYPE_A))
    put_tabbed(artifact(empty, descriptor(TYPE_B, blob_b), 'test layer b', TYPE_B))
    put_tabbed(artifact(empty, descriptor(TYPE_B, blob_b), None, TYPE_B, missing_subject))
    put_tabbed({
        'schemaVersion': 2, 'mediaType': OCI_INDEX, 'artifactType': TYPE_INDEX,
        'manifests': [{'mediaType': OCI_MANIFEST, 'digest': d, 'size': len(b)}
                      for d, b in (a_config, a_layer)],
        'subject': subject, 'annotations': {ANNOTATION: 'test index'},
    }, OCI_INDEX)

    push_blob(client, repo, config)
    push_blob(client, repo, layer)
    r = client.put(f'/v2/{repo}/manifests/{subject["digest"]}', content=subject_body,
                   headers={'Content-Type': OCI_MANIFEST})
    assert r.status_code == 201

    entries = referrers(client, repo, subject['digest']).json()['manifests']
    assert len(entries) == 5
    for e in entries:
        assert len(e['annotations']) == 1, e
        assert ANNOTATION in e['annotations']
    assert sorted(e['annotations'][ANNOTATION] for e in entries) == [
        'test config a', 'test config b', 'test index', 'test layer a', 'test layer b']
    types = sorted(e.get('artifactType', '') for e in entries)
    assert types == sorted([TYPE_A, TYPE_A, TYPE_B, TYPE_B, TYPE_INDEX])
    r = referrers(client, repo, subject['digest'], f'?artifactType={TYPE_A}')
    assert r.headers['oci-filters-applied'] == 'artifactType'
    assert set(by_digest(r)) == {a_config[0], a_layer[0]}
    assert len(referrers(client, repo, missing_subject['digest']).json()['manifests']) == 1
