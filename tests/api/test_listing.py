"""Listings and the API as a whole: /v2/ (end-1), tags (end-8), the catalog, routing,
and the error envelope every failure carries. Referrers (end-12) are in
test_referrers.py.

Tests are named after the rule they prove (registry-checklist §1 ``rNN``, §3.11
``legacy``/``new``, §5 header matrix ``s5``).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.api.listing_support import (
    INVALID_N,
    app_client,
    follow,
    next_link,
    push_artifact,
    referrers,
    subject_of,
    tag_all,
)
from tests.support import (
    OCI_INDEX,
    OCI_MANIFEST,
    SPEC_CODES,
    assert_error,
    digest,
    image_manifest,
    push_blob,
    push_image,
)

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
