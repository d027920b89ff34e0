"""Listings and the API as a whole: /v2/ (end-1), tags (end-8), referrers (end-12), the
catalog, routing, and the error envelope every failure carries.

Tests are named after the rule they prove (registry-checklist §1 ``rNN``, §3.11
``legacy``/``new``, §5 header matrix ``s5``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from oci_ref.app import create_app
from oci_ref.config import Config
from tests.support import (
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

LINK_RE = re.compile(r'^<(?P<url>[^>]+)>;\s*rel="next"$')
TYPE_A = 'application/vnd.nhl.peanut.butter.bagel'
TYPE_B = 'application/vnd.nba.strawberry.jam.croissant'
TYPE_INDEX = 'application/vnd.food.stand'
ANNOTATION = 'org.opencontainers.conformance.test'


# -- helpers -----------------------------------------------------------------------


def app_client(tmp_path: Path, **settings: Any) -> InProcess:
    return InProcess(create_app(Config(root=tmp_path / 'data', **settings)))


def next_link(r: Any) -> str | None:
    """The path+query of an RFC 5988 ``Link: <…>; rel="next"``, or None."""
    value = r.headers.get('link')
    if value is None:
        return None
    m = LINK_RE.match(value)
    assert m, f'Link is not RFC 5988 rel="next": {value!r}'
    parts = urlsplit(m['url'])
    assert parts.path.startswith('/v2/'), value
    return f'{parts.path}?{parts.query}' if parts.query else parts.path


def follow(c: Any, url: str, key: str, limit: int = 100) -> tuple[list[Any], int]:
    """Follow Link headers from ``url``; return every item of ``key`` and the pages."""
    items: list[Any] = []
    pages = 0
    next_url: str | None = url
    while next_url is not None:
        r = c.get(next_url)
        assert r.status_code == 200, (next_url, r.content)
        items += r.json()[key]
        pages += 1
        assert pages <= limit
        next_url = next_link(r)
    return items, pages


def tag_all(c: Any, name: str, tags: list[str]) -> str:
    """One manifest carrying every tag in ``tags``; returns its digest."""
    d, body = push_image(c, name, tags[0])
    for start in range(1, len(tags), 50):
        query = '&'.join(f'tag={t}' for t in tags[start:start + 50])
        r = c.put(f'/v2/{name}/manifests/{d}?{query}', content=body,
                  headers={'Content-Type': OCI_MANIFEST})
        assert r.status_code == 201, r.content
    return d


def subject_of(c: Any, name: str, reference: str = 'subject') -> dict[str, Any]:
    d, body = push_image(c, name, reference, seed=f'subject-{reference}')
    return {'mediaType': OCI_MANIFEST, 'digest': d, 'size': len(body)}


def push_artifact(c: Any, name: str, subject: dict[str, Any] | None, *,
                  artifact_type: str | None = None, config_type: str = EMPTY_JSON,
                  config: bytes = b'{}', annotations: dict[str, str] | None = None,
                  layer: bytes = b'artifact payload', tag: str | None = None
                  ) -> tuple[str, bytes]:
    push_blob(c, name, config)
    push_blob(c, name, layer)
    doc: dict[str, Any] = {'schemaVersion': 2, 'mediaType': OCI_MANIFEST}
    if artifact_type is not None:
        doc['artifactType'] = artifact_type
    doc['config'] = descriptor(config_type, config)
    doc['layers'] = [descriptor('application/octet-stream', layer)]
    if subject is not None:
        doc['subject'] = subject
    if annotations is not None:
        doc['annotations'] = annotations
    body = json.dumps(doc).encode()
    ref = tag or digest(body)
    r = c.put(f'/v2/{name}/manifests/{ref}', content=body,
              headers={'Content-Type': OCI_MANIFEST})
    assert r.status_code == 201, r.content
    return digest(body), body


def push_index(c: Any, name: str, children: list[tuple[str, bytes]],
               subject: dict[str, Any] | None, **extra: Any) -> tuple[str, bytes]:
    doc: dict[str, Any] = {
        'schemaVersion': 2, 'mediaType': OCI_INDEX,
        'manifests': [{'mediaType': OCI_MANIFEST, 'digest': d, 'size': len(b)}
                      for d, b in children],
        **extra,
    }
    if subject is not None:
        doc['subject'] = subject
    body = json.dumps(doc).encode()
    r = c.put(f'/v2/{name}/manifests/{digest(body)}', content=body,
              headers={'Content-Type': OCI_INDEX})
    assert r.status_code == 201, r.content
    return digest(body), body


def referrers(c: Any, name: str, subject_digest: str, query: str = '') -> Any:
    r = c.get(f'/v2/{name}/referrers/{subject_digest}{query}')
    assert r.status_code == 200, r.content
    assert r.headers['content-type'] == OCI_INDEX
    body = r.json()
    assert body['schemaVersion'] == 2
    assert body['mediaType'] == OCI_INDEX
    assert isinstance(body['manifests'], list)
    return r


def by_digest(r: Any) -> dict[str, dict[str, Any]]:
    entries = r.json()['manifests']
    found = {e['digest']: e for e in entries}
    assert len(found) == len(entries), 'duplicate referrers'
    return found


# -- end-1: /v2/ ---------------------------------------------------------------------


@pytest.mark.parametrize('path', ['/v2/', '/v2'])
def test_r75_v2_base_is_200_with_empty_json(client, path):
    r = client.get(path)
    assert r.status_code == 200
    assert r.json() == {}
    assert r.headers['content-type'].startswith('application/json')
    assert r.headers['docker-distribution-api-version'] == 'registry/2.0'


@pytest.mark.parametrize('path', ['/v2/', '/v2'])
def test_r74_v2_base_head_is_200_without_body(client, path):
    r = client.head(path)
    assert r.status_code == 200
    assert r.content == b''
    assert r.headers['docker-distribution-api-version'] == 'registry/2.0'


# -- §1.8 Tags -----------------------------------------------------------------------


def test_r52_tags_list_body_has_name_and_tags(client, repo):
    tag_all(client, repo, ['v1', 'v2'])
    r = client.get(f'/v2/{repo}/tags/list')
    assert r.status_code == 200
    assert r.headers['content-type'].startswith('application/json')
    assert r.json() == {'name': repo, 'tags': ['v1', 'v2']}


def test_r52_tags_list_may_be_empty_for_an_existing_repository(client, repo):
    config = b'{"untagged": true}'
    push_blob(client, repo, config)
    body = image_manifest(config, [])
    r = client.put(f'/v2/{repo}/manifests/{digest(body)}', content=body,
                   headers={'Content-Type': OCI_MANIFEST})
    assert r.status_code == 201
    r = client.get(f'/v2/{repo}/tags/list')
    assert r.status_code == 200
    assert r.json() == {'name': repo, 'tags': []}


def test_r52_tags_list_empty_after_the_only_tag_is_deleted(client, repo):
    push_image(client, repo, 'only')
    assert client.delete(f'/v2/{repo}/manifests/only').status_code == 202
    r = client.get(f'/v2/{repo}/tags/list')
    assert r.status_code == 200
    assert r.json()['tags'] == []


def test_r53_tags_in_ascii_order_case_sensitive(client, repo):
    tags = ['b', 'B', 'a', 'A', '_x', 'Z9', 'z', '1.0', '1.0-rc', '10', '9', 'a.b', 'a-b',
            'a_b']
    tag_all(client, repo, tags)
    got = client.get(f'/v2/{repo}/tags/list').json()['tags']
    assert got == sorted(tags)  # Python str order on ASCII == Go sort.Strings
    assert got[:4] == ['1.0', '1.0-rc', '10', '9']
    assert got.index('A') < got.index('Z9') < got.index('_x') < got.index('a')


def test_r54_n_returns_exactly_n_when_more_exist(client, repo):
    tags = [f't{i:02d}' for i in range(10)]
    tag_all(client, repo, tags)
    for n in (1, 3, 9, 10):
        r = client.get(f'/v2/{repo}/tags/list?n={n}')
        assert r.status_code == 200
        assert r.json()['tags'] == tags[:n]
    r = client.get(f'/v2/{repo}/tags/list?n=50')
    assert r.json()['tags'] == tags
    assert 'link' not in r.headers


def test_r54_fewer_than_n_only_with_a_link_header(tmp_path):
    c = app_client(tmp_path, page_max=3)
    name = 'paged/tags'
    tags = [f't{i}' for i in range(8)]
    tag_all(c, name, tags)
    r = c.get(f'/v2/{name}/tags/list?n=5')
    got = r.json()['tags']
    assert got == tags[:len(got)]
    if len(got) < 5:
        assert next_link(r) is not None
    r = c.get(f'/v2/{name}/tags/list')
    assert r.json()['tags'] == tags[:3]
    assert next_link(r) is not None
    assert follow(c, f'/v2/{name}/tags/list', 'tags')[0] == tags


def test_r55_link_is_rfc5988_next_and_following_it_returns_the_rest(client, repo):
    tags = [f'v{i}' for i in range(7)]
    tag_all(client, repo, tags)
    r = client.get(f'/v2/{repo}/tags/list?n=3')
    assert r.json()['tags'] == tags[:3]
    link = next_link(r)
    assert link is not None
    assert link.startswith(f'/v2/{repo}/tags/list?')
    query = parse_qs(urlsplit(link).query)
    assert query['n'] == ['3']
    items, pages = follow(client, f'/v2/{repo}/tags/list?n=3', 'tags')
    assert items == tags
    assert pages == 3


def test_r55_no_link_on_the_last_page(client, repo):
    tag_all(client, repo, ['a', 'b', 'c'])
    for query in ('', '?n=3', '?n=4', '?n=1&last=b', '?last=a'):
        r = client.get(f'/v2/{repo}/tags/list{query}')
        assert r.status_code == 200
        assert 'link' not in r.headers, query


def test_r56_n_zero_is_empty_list_without_link(client, repo):
    tag_all(client, repo, ['a', 'b'])
    for query in ('?n=0', '?n=0&last=a'):
        r = client.get(f'/v2/{repo}/tags/list{query}')
        assert r.status_code == 200
        assert r.json() == {'name': repo, 'tags': []}
        assert 'link' not in r.headers


def test_r57_last_is_exclusive_and_by_value(client, repo):
    tags = ['a', 'b', 'c', 'd', 'e']
    tag_all(client, repo, tags)
    assert client.get(f'/v2/{repo}/tags/list?n=2&last=b').json()['tags'] == ['c', 'd']
    # n is optional with last
    assert client.get(f'/v2/{repo}/tags/list?last=c').json()['tags'] == ['d', 'e']
    # a value that is not a tag: everything strictly after it
    assert client.get(f'/v2/{repo}/tags/list?last=bb').json()['tags'] == ['c', 'd', 'e']
    # a numeric "index" is a value too, not a position
    assert client.get(f'/v2/{repo}/tags/list?last=2').json()['tags'] == tags
    assert client.get(f'/v2/{repo}/tags/list?last=e').json()['tags'] == []


def test_legacy_tags_test0_to_3_and_upper_case_are_distinct(client, repo):
    tags = [f'test{i}' for i in range(4)] + [f'TEST{i}' for i in range(4)]
    tag_all(client, repo, tags)
    got = client.get(f'/v2/{repo}/tags/list').json()['tags']
    assert got == ['TEST0', 'TEST1', 'TEST2', 'TEST3', 'test0', 'test1', 'test2', 'test3']
    half = len(tags) // 2
    r = client.get(f'/v2/{repo}/tags/list?n={half}')
    assert r.json()['tags'] == got[:half]
    last = got[half - 1]
    r = client.get(f'/v2/{repo}/tags/list?n={half}&last={last}')
    assert r.json()['tags'] == got[half:]


# '%C2%B2' is '²' and '%EF%BC%93' is a full-width '3': str.isdigit() accepts both.
INVALID_N = ['-1', 'abc', '1.5', '0x10', '%203', '%2B3', '%C2%B2', '%EF%BC%93']


@pytest.mark.parametrize('n', INVALID_N)
def test_r54_invalid_n_is_400_with_a_spec_code(client, repo, n):
    tag_all(client, repo, ['a'])
    r = client.get(f'/v2/{repo}/tags/list?n={n}')
    assert r.status_code == 400
    assert r.headers['content-type'].startswith('application/json')
    assert r.json()['errors'][0]['code'] in SPEC_CODES


def test_r52_tags_list_of_unknown_repository_is_404_name_unknown(client, repo):
    assert_error(client.get(f'/v2/{repo}/tags/list'), 404, 'NAME_UNKNOWN')
    assert_error(client.get(f'/v2/{repo}/tags/list?n=0'), 404, 'NAME_UNKNOWN')


def test_new_tags_list_before_anything_is_pushed_is_200_or_404(client, repo):
    r = client.get(f'/v2/{repo}/tags/list')
    assert r.status_code in (200, 404)
    if r.status_code == 404:
        assert r.json()['errors'][0]['code'] in SPEC_CODES


def test_r68_referrers_tag_schema_tags_are_plain_tags(client, repo):
    subject = subject_of(client, repo)
    encoded = subject['digest'].split(':')[1]
    d512 = digest(b'some sha512 subject', 'sha512')
    fallback = [f'sha256-{encoded}', f'sha512-{d512.split(":")[1][:64]}',
                f'sha256-{encoded}.sig', f'sha256-{encoded}.att']
    sig, sig_body = push_artifact(client, repo, None, artifact_type='application/x.sig')
    # ggcr / cosign fallback indexes: entries without artifactType or annotations.
    for tag in fallback:
        doc = {'schemaVersion': 2, 'mediaType': OCI_INDEX,
               'manifests': [{'mediaType': OCI_MANIFEST, 'digest': sig,
                              'size': len(sig_body)}]}
        body = json.dumps(doc).encode()
        r = client.put(f'/v2/{repo}/manifests/{tag}', content=body,
                       headers={'Content-Type': OCI_INDEX})
        assert r.status_code == 201, (tag, r.content)
        got = client.get(f'/v2/{repo}/manifests/{tag}')
        assert got.status_code == 200
        assert got.content == body
    assert set(fallback) <= set(client.get(f'/v2/{repo}/tags/list').json()['tags'])


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


# -- Catalog -------------------------------------------------------------------------


def test_catalog_lists_repositories_in_ascii_order(client):
    names = ['b/one', 'a/two', 'a/one', 'c', 'a1']
    for name in names:
        push_image(client, name, 'v1')
    r = client.get('/v2/_catalog')
    assert r.status_code == 200
    assert r.headers['content-type'].startswith('application/json')
    assert r.json() == {'repositories': sorted(names)}


def test_catalog_of_an_empty_registry_is_empty(client):
    r = client.get('/v2/_catalog')
    assert r.status_code == 200
    assert r.json() == {'repositories': []}
    assert 'link' not in r.headers


def test_catalog_n_last_and_link(client):
    names = [f'repo{i}' for i in range(7)]
    for name in names:
        push_blob(client, name, f'blob {name}'.encode())
    r = client.get('/v2/_catalog?n=3')
    assert r.json()['repositories'] == names[:3]
    link = next_link(r)
    assert link is not None and link.startswith('/v2/_catalog?')
    items, pages = follow(client, '/v2/_catalog?n=3', 'repositories')
    assert items == names
    assert pages == 3
    assert client.get('/v2/_catalog?n=2&last=repo2').json()['repositories'] == names[3:5]
    assert client.get('/v2/_catalog?last=repo4').json()['repositories'] == names[5:]
    r = client.get('/v2/_catalog?n=0')
    assert r.json()['repositories'] == []
    assert 'link' not in r.headers


def test_catalog_page_max_caps_and_links(tmp_path):
    c = app_client(tmp_path, page_max=2)
    names = ['x/a', 'x/b', 'x/c']
    for name in names:
        push_blob(c, name, name.encode())
    r = c.get('/v2/_catalog')
    assert r.json()['repositories'] == names[:2]
    assert next_link(r) is not None
    assert follow(c, '/v2/_catalog', 'repositories')[0] == names


@pytest.mark.parametrize('n', INVALID_N)
def test_catalog_invalid_n_is_400_with_a_spec_code(client, n):
    r = client.get(f'/v2/_catalog?n={n}')
    assert r.status_code == 400
    assert r.json()['errors'][0]['code'] in SPEC_CODES


# -- Routing -------------------------------------------------------------------------


@pytest.mark.parametrize('name', [
    'a',
    'org/team/app',
    'x/manifests/y',
    'manifests/blobs/tags',
    'a/blobs/uploads/b',
    'a/tags/list/b',
    'a/referrers/b',
    'one/two/three/four/five/six/seven',
    'a.b_c__d---e/f-g',
])
def test_routing_names_with_slashes_and_reserved_segments(client, name):
    d, body = push_image(client, name, 'v1', seed=name)
    r = client.get(f'/v2/{name}/manifests/v1')
    assert r.status_code == 200 and r.content == body
    assert client.head(f'/v2/{name}/manifests/{d}').status_code == 200
    assert client.get(f'/v2/{name}/tags/list').json() == {'name': name, 'tags': ['v1']}
    layer = client.get(f'/v2/{name}/manifests/v1').json()['layers'][0]['digest']
    assert client.get(f'/v2/{name}/blobs/{layer}').status_code == 200
    assert referrers(client, name, d).json()['manifests'] == []
    assert name in client.get('/v2/_catalog').json()['repositories']
    r = client.post(f'/v2/{name}/blobs/uploads/')
    assert r.status_code == 202
    assert r.headers['location'].startswith(f'/v2/{name}/blobs/uploads/')


def test_routing_blob_uploads_without_trailing_slash(client, repo):
    r = client.post(f'/v2/{repo}/blobs/uploads')
    assert r.status_code == 202
    assert r.headers['location'].startswith(f'/v2/{repo}/blobs/uploads/')


def test_routing_repositories_differing_only_by_a_suffix_segment_are_distinct(client):
    _, outer = push_image(client, 'a', 'v1', seed='outer')
    _, inner = push_image(client, 'a/manifests/v1', 'v1', seed='inner')
    assert client.get('/v2/a/manifests/v1').content == outer
    assert client.get('/v2/a/manifests/v1/manifests/v1').content == inner
    assert client.get('/v2/a/manifests/v1/tags/list').json()['name'] == 'a/manifests/v1'


INVALID_NAMES = [
    'Upper/case',
    'a//b',
    '-a',
    'a-',
    'a/-b',
    'a..b',
    'a___b',
    '.a',
    'a/',
    'a' * 256,
    '/'.join(['abcdefg'] * 32) + 'x' * 10,  # 265 characters, valid components
]


@pytest.mark.parametrize('name', INVALID_NAMES)
def test_r07_invalid_name_is_400_name_invalid_on_every_endpoint(client, name):
    d = digest(b'whatever')
    for method, path in [
        ('GET', f'/v2/{name}/manifests/latest'),
        ('PUT', f'/v2/{name}/manifests/latest'),
        ('DELETE', f'/v2/{name}/manifests/{d}'),
        ('GET', f'/v2/{name}/blobs/{d}'),
        ('DELETE', f'/v2/{name}/blobs/{d}'),
        ('POST', f'/v2/{name}/blobs/uploads/'),
        ('GET', f'/v2/{name}/tags/list'),
        ('GET', f'/v2/{name}/referrers/{d}'),
    ]:
        r = client.request(method, path, content=b'{}' if method == 'PUT' else None,
                           headers={'Content-Type': OCI_MANIFEST})
        assert_error(r, 400, 'NAME_INVALID')
    assert client.head(f'/v2/{name}/manifests/latest').status_code == 400


def test_r08_name_of_255_characters_is_accepted(client):
    name = '/'.join(['abcdefg'] * 31) + 'x' * 8
    assert len(name) == 255
    d, body = push_image(client, name, 'v1')
    assert client.get(f'/v2/{name}/manifests/{d}').content == body


# -- §1.12 API-wide ------------------------------------------------------------------


@pytest.mark.parametrize('path', ['/', '/v1/', '/v2/repo', '/v2/repo/unknown/thing',
                                  '/v2/repo/manifests', '/v2/repo/blobs',
                                  '/v3/repo/manifests/latest', '/v2/_catalog/x'])
def test_r77_unknown_route_is_404_with_the_json_envelope(client, path):
    r = client.get(path)
    assert r.status_code == 404
    assert r.headers['content-type'].startswith('application/json')
    errors = r.json()['errors']
    assert errors and all(e['code'] in SPEC_CODES for e in errors)


@pytest.mark.parametrize(('method', 'path', 'allowed'), [
    ('POST', '/v2/', 'GET'),
    ('DELETE', '/v2/_catalog', 'GET'),
    ('POST', '/v2/repo/tags/list', 'GET'),
    ('POST', '/v2/repo/manifests/latest', 'PUT'),
    ('PATCH', '/v2/repo/manifests/latest', 'GET'),
    ('PUT', f'/v2/repo/blobs/{digest(b"x")}', 'DELETE'),
    ('PUT', '/v2/repo/blobs/uploads/', 'POST'),
    ('DELETE', f'/v2/repo/referrers/{digest(b"x")}', 'GET'),
])
def test_r77_wrong_method_is_405_with_allow_and_the_json_envelope(
        client, method, path, allowed):
    r = client.request(method, path)
    assert r.status_code == 405
    assert allowed in [m.strip() for m in r.headers['allow'].split(',')]
    assert method not in [m.strip() for m in r.headers['allow'].split(',')]
    assert r.headers['content-type'].startswith('application/json')
    errors = r.json()['errors']
    assert errors and all(e['code'] in SPEC_CODES for e in errors)


def _error_responses(c: Any, name: str) -> list[Any]:
    d = digest(b'absent')
    return [
        c.get(f'/v2/{name}/manifests/absent'),
        c.get(f'/v2/{name}/blobs/{d}'),
        c.get(f'/v2/{name}/blobs/sha256:bad'),
        c.get(f'/v2/{name}/tags/list?n=x'),
        c.get(f'/v2/{name}/referrers/bad'),
        c.get('/v2/UPPER/tags/list'),
        c.put(f'/v2/{name}/manifests/v1', content=b'not json',
              headers={'Content-Type': OCI_MANIFEST}),
        c.put(f'/v2/{name}/manifests/v1', content=image_manifest(b'{}', [b'missing']),
              headers={'Content-Type': OCI_MANIFEST}),
        c.get(f'/v2/{name}/blobs/uploads/00000000-0000-0000-0000-000000000000'),
        c.post('/v2/'),
        c.get('/nowhere'),
    ]


def test_r77_every_4xx_body_is_the_spec_envelope(client, repo):
    push_image(client, repo, 'v1')
    for r in _error_responses(client, repo):
        assert 400 <= r.status_code < 500, r.status_code
        assert r.headers['content-type'].startswith('application/json')
        body = r.json()
        assert set(body) == {'errors'}
        assert isinstance(body['errors'], list) and body['errors']
        for e in body['errors']:
            assert e['code'] in SPEC_CODES
            assert re.fullmatch(r'[A-Z_]+', e['code'])
            assert set(e) <= {'code', 'message', 'detail'}
            assert isinstance(e.get('message', ''), str)


def test_s5_api_version_header_on_every_response(client, repo):
    d, _ = push_image(client, repo, 'v1')
    responses = [
        client.get('/v2/'), client.head('/v2/'),
        client.get(f'/v2/{repo}/manifests/v1'), client.head(f'/v2/{repo}/manifests/{d}'),
        client.get(f'/v2/{repo}/tags/list'), client.get(f'/v2/{repo}/referrers/{d}'),
        client.get('/v2/_catalog'), client.post(f'/v2/{repo}/blobs/uploads/'),
        *_error_responses(client, repo),
    ]
    for r in responses:
        assert r.headers.get('docker-distribution-api-version') == 'registry/2.0'


def test_r79_warning_headers_if_any_use_code_299_and_no_date(client, repo):
    d, _ = push_image(client, repo, 'v1')
    responses = [
        client.get('/v2/'), client.get(f'/v2/{repo}/manifests/v1'),
        client.head(f'/v2/{repo}/manifests/{d}'), client.get(f'/v2/{repo}/tags/list'),
        client.get(f'/v2/{repo}/referrers/{d}'), client.get('/v2/_catalog'),
        *_error_responses(client, repo),
    ]
    for r in responses:
        warnings = [v for k, v in r.headers.items() if k.lower() == 'warning']
        total = 0
        for w in warnings:
            assert re.fullmatch(r'299 - "(?:[^"\\]|\\.)*"', w), w
            total += len(w)
        assert total <= 4096


def test_r04_r05_r76_every_endpoint_of_every_category_gives_its_success_code(
        client, repo):
    other = f'{repo}-mount'
    assert client.get('/v2/').status_code == 200  # end-1
    data = b'status code blob'
    d = digest(data)
    r = client.post(f'/v2/{repo}/blobs/uploads/')  # end-4a
    assert r.status_code == 202
    location = r.headers['location']
    r = client.patch(location, content=data[:5],  # end-5
                     headers={'Content-Type': 'application/octet-stream',
                              'Content-Range': '0-4'})
    assert r.status_code == 202
    assert client.get(r.headers['location']).status_code == 204  # end-13
    r = client.put(f'{r.headers["location"]}?digest={d}', content=data[5:],  # end-6
                   headers={'Content-Type': 'application/octet-stream'})
    assert r.status_code == 201
    assert client.get(f'/v2/{repo}/blobs/{d}').status_code == 200  # end-2
    assert client.head(f'/v2/{repo}/blobs/{d}').status_code == 200
    mono = b'monolithic single post'
    r = client.post(f'/v2/{repo}/blobs/uploads/?digest={digest(mono)}', content=mono,
                    headers={'Content-Type': 'application/octet-stream'})
    assert r.status_code in (201, 202)  # end-4b
    r = client.post(f'/v2/{other}/blobs/uploads/?mount={d}&from={repo}')  # end-11
    assert r.status_code in (201, 202)
    r = client.post(f'/v2/{repo}/blobs/uploads/')
    assert client.delete(r.headers['location']).status_code == 204  # end-14
    md, _ = push_image(client, repo, 'v1')  # end-7 (asserts 201)
    assert client.get(f'/v2/{repo}/manifests/v1').status_code == 200  # end-3
    assert client.get(f'/v2/{repo}/tags/list').status_code == 200  # end-8a
    assert client.get(f'/v2/{repo}/tags/list?n=1&last=a').status_code == 200  # end-8b
    assert client.get(f'/v2/{repo}/referrers/{md}').status_code == 200  # end-12a
    assert client.get(f'/v2/{repo}/referrers/{md}?artifactType=a/b').status_code == 200
    assert client.delete(f'/v2/{repo}/manifests/v1').status_code == 202  # end-9 (tag)
    assert client.delete(f'/v2/{repo}/manifests/{md}').status_code == 202  # end-9
    assert client.delete(f'/v2/{repo}/blobs/{d}').status_code == 202  # end-10


def test_r74_head_is_supported_wherever_get_is(client, repo):
    """RFC 9110 §9.1: general-purpose servers MUST support GET and HEAD (R74: follow
    RFC 9110 where the spec is silent). HEAD answers like GET, without the body."""
    d, _ = push_image(client, repo, 'v1')
    for path in (f'/v2/{repo}/tags/list', '/v2/_catalog', f'/v2/{repo}/referrers/{d}'):
        get = client.get(path)
        head = client.head(path)
        assert head.status_code == get.status_code == 200, (path, head.status_code)
        assert head.content == b''
        assert head.headers['content-type'] == get.headers['content-type']


def test_r74_head_responses_never_carry_a_body(client, repo):
    d, _ = push_image(client, repo, 'v1')
    for path in ('/v2/', f'/v2/{repo}/manifests/v1', f'/v2/{repo}/manifests/{d}',
                 f'/v2/{repo}/manifests/absent', f'/v2/{repo}/blobs/{digest(b"none")}'):
        r = client.head(path)
        assert r.content == b'', path
