"""Blobs: distribution-spec §Pulling blobs, §Checking if content exists, §Mounting a blob,
§Deleting blobs (end-2, end-10, end-11); checklist R15-R21, R41-R43, §3.1, §3.11, §5, §6.

Every test names the rule it proves. Each runs in-process over a fresh storage root.
"""

from __future__ import annotations

import hashlib
import random
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from oci_ref.app import create_app
from oci_ref.config import Config
from tests.support import InProcess, assert_error, digest, push_blob

ALGORITHMS = ['sha256', 'sha512']


def blob(n: int, seed: int = 1) -> bytes:
    """Deterministic, non-periodic bytes (a periodic pattern would hide offset bugs)."""
    return random.Random(seed).randbytes(n)


def single_post(c: Any, name: str, data: bytes, algorithm: str = 'sha256') -> str:
    d = digest(data, algorithm)
    r = c.post(f'/v2/{name}/blobs/uploads/?digest={d}', content=data)
    assert r.status_code == 201, r.content
    return d


def mount(c: Any, name: str, d: str, from_: str | None = None) -> Any:
    query = f'mount={d}' + (f'&from={from_}' if from_ is not None else '')
    return c.post(f'/v2/{name}/blobs/uploads/?{query}')


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob('*') if p.is_file())


def bad_blob_digests(data: bytes) -> dict[str, str]:
    hexdigest = hashlib.sha256(data).hexdigest()
    return {
        'no colon': hexdigest,
        'not hex': 'sha256:' + 'z' * 64,
        'hex too short': f'sha256:{hexdigest[:-1]}',
        'hex too long': f'sha256:{hexdigest}0',
        'upper-case hex': f'sha256:{hexdigest.upper()}',
        'unsupported algorithm': f'md5:{hashlib.md5(data).hexdigest()}',
        'sha512 with sha256 length': f'sha512:{hexdigest}',
        'empty encoded': 'sha256:',
        'totally wrong': 'sha256:totallywrong',
    }


# -- end-2: GET (R15-R17) --------------------------------------------------------------


@pytest.mark.parametrize('algorithm', ALGORITHMS)
def test_r15_r17_get_blob_is_200_with_bytes_and_headers(client, repo, algorithm):
    data = blob(3000)
    d = push_blob(client, repo, data, algorithm)
    r = client.get(f'/v2/{repo}/blobs/{d}')
    assert r.status_code == 200
    assert r.content == data
    assert r.headers['content-length'] == '3000'
    assert r.headers['docker-content-digest'] == d
    assert digest(r.content, algorithm) == r.headers['docker-content-digest']
    assert r.headers['content-type'] == 'application/octet-stream'
    assert r.headers['accept-ranges'] == 'bytes'
    assert r.headers['docker-distribution-api-version'] == 'registry/2.0'


@pytest.mark.parametrize('algorithm', ALGORITHMS)
def test_r15_empty_blob_get_is_200_with_content_length_zero(client, repo, algorithm):
    d = push_blob(client, repo, b'', algorithm)
    r = client.get(f'/v2/{repo}/blobs/{d}')
    assert r.status_code == 200
    assert r.content == b''
    assert r.headers['content-length'] == '0'
    assert r.headers['docker-content-digest'] == d
    assert r.headers['content-type'] == 'application/octet-stream'


@pytest.mark.parametrize('algorithm', ALGORITHMS)
def test_r15_empty_json_blob_get_is_200(client, repo, algorithm):
    d = push_blob(client, repo, b'{}', algorithm)
    r = client.get(f'/v2/{repo}/blobs/{d}')
    assert r.status_code == 200
    assert r.content == b'{}'
    assert r.headers['content-length'] == '2'
    assert r.headers['docker-content-digest'] == d
    # Blobs are bytes, whatever they look like.
    assert r.headers['content-type'] == 'application/octet-stream'


@pytest.mark.parametrize('algorithm', ALGORITHMS)
def test_r16_unknown_blob_is_404_blob_unknown(client, repo, algorithm):
    push_blob(client, repo, b'something else')  # the repository exists
    d = digest(blob(10), algorithm)
    assert_error(client.get(f'/v2/{repo}/blobs/{d}'), 404, 'BLOB_UNKNOWN')
    r = client.head(f'/v2/{repo}/blobs/{d}')
    assert r.status_code == 404
    assert r.content == b''


def test_r16_blob_in_unknown_repository_is_404(client, repo):
    r = client.get(f'/v2/{repo}/blobs/{digest(b"x")}')
    assert r.status_code == 404
    assert r.json()['errors'][0]['code'] in ('BLOB_UNKNOWN', 'NAME_UNKNOWN')
    assert client.head(f'/v2/{repo}/blobs/{digest(b"x")}').status_code == 404


def test_r16_blob_of_an_unfinished_upload_is_404(client, repo):
    data = blob(100)
    r = client.post(f'/v2/{repo}/blobs/uploads/')
    location = r.headers['location']
    assert client.patch(location, content=data,
                        headers={'Content-Range': '0-99'}).status_code == 202
    assert_error(client.get(f'/v2/{repo}/blobs/{digest(data)}'), 404, 'BLOB_UNKNOWN')
    assert client.head(f'/v2/{repo}/blobs/{digest(data)}').status_code == 404


# -- end-2: HEAD (R19-R21) -------------------------------------------------------------


@pytest.mark.parametrize('algorithm', ALGORITHMS)
@pytest.mark.parametrize('size', [0, 2, 1, 5000])
def test_r19_r21_head_is_200_without_body_with_real_length_and_digest(client, repo,
                                                                      algorithm, size):
    data = b'{}' if size == 2 else blob(size)
    d = push_blob(client, repo, data, algorithm)
    r = client.head(f'/v2/{repo}/blobs/{d}')
    assert r.status_code == 200
    assert r.content == b''
    assert r.headers['content-length'] == str(size)
    assert r.headers['docker-content-digest'] == d
    assert r.headers['content-type'] == 'application/octet-stream'
    assert r.headers['accept-ranges'] == 'bytes'
    assert r.headers['docker-distribution-api-version'] == 'registry/2.0'


def test_r20_head_of_missing_blob_is_404(client, repo):
    push_blob(client, repo, b'present')
    assert client.head(f'/v2/{repo}/blobs/{digest(b"absent")}').status_code == 404
    assert client.head(f'/v2/{repo}/blobs/{digest(b"absent", "sha512")}').status_code == 404


# -- malformed digests on blob URLs (R24, §6) ------------------------------------------


@pytest.mark.parametrize('variant', list(bad_blob_digests(b'')))
def test_malformed_digest_on_blob_get_head_delete_is_400_digest_invalid(client, repo,
                                                                        variant):
    data = blob(50)
    push_blob(client, repo, data)
    bad = bad_blob_digests(data)[variant]
    assert_error(client.get(f'/v2/{repo}/blobs/{bad}'), 400, 'DIGEST_INVALID')
    r = client.head(f'/v2/{repo}/blobs/{bad}')
    assert r.status_code == 400
    assert r.content == b''
    assert_error(client.delete(f'/v2/{repo}/blobs/{bad}'), 400, 'DIGEST_INVALID')
    # The real blob is untouched.
    assert client.head(f'/v2/{repo}/blobs/{digest(data)}').status_code == 200


# -- Range requests (R18) --------------------------------------------------------------


@pytest.fixture
def ranged(client, repo, request):
    """A 2048-byte blob, as in the conformance suite's range tests."""
    algorithm = getattr(request, 'param', 'sha256')
    data = blob(2048, seed=7)
    d = push_blob(client, repo, data, algorithm)
    return client, f'/v2/{repo}/blobs/{d}', data, d


@pytest.mark.parametrize('ranged', ALGORITHMS, indirect=True)
@pytest.mark.parametrize(('header', 'first', 'last'), [
    ('bytes=500-1499', 500, 1499),
    ('bytes=500-', 500, 2047),
    ('bytes=-500', 1548, 2047),
    ('bytes=2000-5000', 2000, 2047),
    ('bytes=0-0', 0, 0),
    ('bytes=2047-2047', 2047, 2047),
    ('bytes=0-2047', 0, 2047),
    ('bytes=-5000', 0, 2047),
])
def test_r18_single_range_is_206_with_content_range(ranged, header, first, last):
    client, url, data, d = ranged
    r = client.get(url, headers={'Range': header})
    assert r.status_code == 206, (header, r.status_code)
    assert r.content == data[first:last + 1]
    assert r.headers['content-length'] == str(last - first + 1)
    assert r.headers['content-range'] in (f'bytes {first}-{last}/2048',
                                          f'bytes {first}-{last}/*')
    assert r.headers['content-type'] == 'application/octet-stream'
    assert r.headers['docker-content-digest'] == d


@pytest.mark.parametrize('header', ['bytes=500-0', 'bytes=5000-10000', 'bytes=2048-',
                                    'bytes=2048-3000', 'bytes=-0'])
def test_r18_unsatisfiable_range_is_416(ranged, header):
    client, url, _, _ = ranged
    r = client.get(url, headers={'Range': header})
    assert r.status_code == 416, (header, r.status_code)
    # RFC 9110 §15.5.17: a 416 to a byte-range request carries the current length.
    assert r.headers['content-range'] == 'bytes */2048'
    assert r.headers['docker-distribution-api-version'] == 'registry/2.0'
    body = r.json()
    assert body['errors'], body


@pytest.mark.parametrize('header', ['bytes=0-99,200-299', 'bytes=0-0,-1'])
def test_r18_multi_range_is_200_with_the_whole_blob(ranged, header):
    client, url, data, d = ranged
    r = client.get(url, headers={'Range': header})
    assert r.status_code == 200
    assert r.content == data
    assert r.headers['content-length'] == '2048'
    assert r.headers['docker-content-digest'] == d
    assert 'content-range' not in r.headers


@pytest.mark.parametrize('header', ['items=0-10', 'lines=1-2'])
def test_r18_range_in_unknown_unit_is_ignored_with_200(ranged, header):
    # RFC 9110 §14.2: a server MUST ignore a Range in a unit it does not understand.
    client, url, data, _ = ranged
    r = client.get(url, headers={'Range': header})
    assert r.status_code == 200
    assert r.content == data
    assert r.headers['content-length'] == '2048'


def test_r21_head_ignores_range_and_keeps_the_real_length(ranged):
    # RFC 9110 §14.2: range handling is defined for GET only; other methods ignore it.
    client, url, _, d = ranged
    r = client.head(url, headers={'Range': 'bytes=500-1499'})
    assert r.status_code == 200
    assert r.content == b''
    assert r.headers['content-length'] == '2048'
    assert r.headers['docker-content-digest'] == d
    assert 'content-range' not in r.headers


def test_r18_resume_from_offset_like_containerd(ranged):
    client, url, data, _ = ranged
    r = client.get(url, headers={'Range': 'bytes=1024-'})
    assert r.status_code == 206
    assert r.headers['content-range'].startswith('bytes 1024-')
    assert data[:1024] + r.content == data


# -- end-10: DELETE --------------------------------------------------------------------


@pytest.mark.parametrize('algorithm', ALGORITHMS)
def test_blob_delete_is_202_then_head_and_get_404_immediately(client, repo, algorithm):
    data = blob(300)
    d = push_blob(client, repo, data, algorithm)
    r = client.delete(f'/v2/{repo}/blobs/{d}')
    assert r.status_code == 202
    assert r.headers['docker-distribution-api-version'] == 'registry/2.0'
    assert client.head(f'/v2/{repo}/blobs/{d}').status_code == 404
    assert_error(client.get(f'/v2/{repo}/blobs/{d}'), 404, 'BLOB_UNKNOWN')
    assert_error(client.delete(f'/v2/{repo}/blobs/{d}'), 404, 'BLOB_UNKNOWN')


def test_delete_unknown_blob_is_404_blob_unknown(client, repo):
    push_blob(client, repo, b'other')
    assert_error(client.delete(f'/v2/{repo}/blobs/{digest(b"never pushed")}'), 404,
                 'BLOB_UNKNOWN')
    assert_error(client.delete(f'/v2/{repo}/blobs/{digest(b"x", "sha512")}'), 404,
                 'BLOB_UNKNOWN')


def test_deleted_blob_can_be_pushed_again(client, repo):
    data = blob(100)
    d = push_blob(client, repo, data)
    assert client.delete(f'/v2/{repo}/blobs/{d}').status_code == 202
    assert push_blob(client, repo, data) == d
    r = client.get(f'/v2/{repo}/blobs/{d}')
    assert r.status_code == 200
    assert r.content == data


def test_blob_delete_in_one_repository_leaves_other_repositories(client, repo):
    data = blob(100)
    other = f'{repo}-b'
    d = push_blob(client, repo, data)
    assert push_blob(client, other, data) == d
    assert client.delete(f'/v2/{repo}/blobs/{d}').status_code == 202
    assert client.head(f'/v2/{repo}/blobs/{d}').status_code == 404
    r = client.get(f'/v2/{other}/blobs/{d}')
    assert r.status_code == 200
    assert r.content == data


# -- end-11: cross-repository mount (R41-R43, §3.11) -----------------------------------


@pytest.mark.parametrize('algorithm', ALGORITHMS)
def test_r41_mount_from_repo_is_201_with_location_and_digest(client, repo, algorithm):
    data = blob(700)
    source = f'{repo}-source'
    d = push_blob(client, source, data, algorithm)
    r = mount(client, repo, d, source)
    assert r.status_code == 201, r.content
    # Legacy suite: exactly /v2/<target>/blobs/<digest>.
    assert r.headers['location'] == f'/v2/{repo}/blobs/{d}'
    assert r.headers['docker-content-digest'] == d
    assert r.headers['content-length'] == '0'
    got = client.get(r.headers['location'])
    assert got.status_code == 200
    assert got.content == data
    assert got.headers['docker-content-digest'] == d


def test_blob_in_repo_a_is_not_visible_in_repo_b_until_mounted(client, repo):
    data = blob(200)
    a, b = f'{repo}-a', f'{repo}-b'
    d = push_blob(client, a, data)
    push_blob(client, b, b'b exists')
    assert client.head(f'/v2/{b}/blobs/{d}').status_code == 404
    assert_error(client.get(f'/v2/{b}/blobs/{d}'), 404, 'BLOB_UNKNOWN')
    assert mount(client, b, d, a).status_code == 201
    r = client.head(f'/v2/{b}/blobs/{d}')
    assert r.status_code == 200
    assert r.headers['content-length'] == '200'


def test_mounted_blob_survives_delete_in_source(client, repo):
    data = blob(200)
    source = f'{repo}-source'
    d = push_blob(client, source, data)
    assert mount(client, repo, d, source).status_code == 201
    assert client.delete(f'/v2/{source}/blobs/{d}').status_code == 202
    r = client.get(f'/v2/{repo}/blobs/{d}')
    assert r.status_code == 200
    assert r.content == data


@pytest.mark.parametrize('algorithm', ALGORITHMS)
def test_anonymous_mount_without_from_of_existing_blob_is_201(client, repo, algorithm):
    data = blob(321)
    d = push_blob(client, f'{repo}-elsewhere', data, algorithm)
    r = mount(client, repo, d)
    assert r.status_code == 201, r.content
    assert r.headers['location'] == f'/v2/{repo}/blobs/{d}'
    assert r.headers['docker-content-digest'] == d
    got = client.get(f'/v2/{repo}/blobs/{d}')
    assert got.status_code == 200
    assert got.content == data


def test_mount_into_the_repository_that_already_has_the_blob_is_201(client, repo):
    d = push_blob(client, repo, b'already here')
    r = mount(client, repo, d, repo)
    assert r.status_code == 201
    assert r.headers['location'] == f'/v2/{repo}/blobs/{d}'


def _assert_fallback_session(client: Any, r: Any, name: str) -> None:
    """R43: a normal session begins; it is usable for the actual upload."""
    assert r.status_code == 202, r.content
    location = r.headers['location']
    assert location.startswith(f'/v2/{name}/blobs/uploads/')
    assert re.fullmatch(r'0-\d+', r.headers['range']), r.headers['range']
    data = blob(64, seed=99)
    d = digest(data)
    done = client.put(f'{location}?digest={d}', content=data)
    assert done.status_code == 201, done.content
    assert client.get(f'/v2/{name}/blobs/{d}').content == data


@pytest.mark.parametrize('with_from', [True, False])
def test_mount_of_unknown_digest_falls_back_to_202_session(client, repo, with_from):
    source = f'{repo}-source'
    push_blob(client, source, b'the source exists')
    d = digest(blob(10, seed=5))
    r = mount(client, repo, d, source if with_from else None)
    _assert_fallback_session(client, r, repo)
    assert client.head(f'/v2/{repo}/blobs/{d}').status_code == 404


def test_mount_from_repository_without_the_blob_is_202_even_if_it_exists_elsewhere(
    client, repo
):
    data = blob(80)
    holder, empty = f'{repo}-holder', f'{repo}-empty'
    d = push_blob(client, holder, data)
    push_blob(client, empty, b'not that blob')
    r = mount(client, repo, d, empty)
    _assert_fallback_session(client, r, repo)
    assert client.head(f'/v2/{repo}/blobs/{d}').status_code == 404


def test_mount_from_unknown_repository_is_202(client, repo):
    d = push_blob(client, f'{repo}-real', blob(20))
    r = mount(client, repo, d, f'{repo}-never-created')
    _assert_fallback_session(client, r, repo)


def test_mount_from_deleted_blob_is_202(client, repo):
    source = f'{repo}-source'
    d = push_blob(client, source, blob(20))
    assert client.delete(f'/v2/{source}/blobs/{d}').status_code == 202
    r = mount(client, repo, d, source)
    _assert_fallback_session(client, r, repo)
    r = mount(client, f'{repo}-anon', d)
    assert r.status_code == 202


def test_mount_without_trailing_slash_and_with_unknown_params_is_201(client, repo):
    source = f'{repo}-source'
    d = push_blob(client, source, blob(20))
    r = client.post(f'/v2/{repo}/blobs/uploads?mount={d}&from={source}&ns=docker.io'
                    '&origin=https://example.com')
    assert r.status_code == 201
    assert r.headers['location'] == f'/v2/{repo}/blobs/{d}'


# -- storage: content is stored once (§3.1 "dedupe by digest") -------------------------


def test_same_bytes_pushed_to_two_repos_are_stored_once(tmp_path):
    root = tmp_path / 'data'
    client = InProcess(create_app(Config(root=root)))
    data = blob(4096, seed=3)
    d = push_blob(client, 'one/repo', data)
    single_post(client, 'two/repo', data)
    # A chunked upload and a mount of the same content too.
    r = client.post('/v2/three/repo/blobs/uploads/')
    location = r.headers['location']
    assert client.patch(location, content=data[:100],
                        headers={'Content-Range': '0-99'}).status_code == 202
    assert client.put(f'{location}?digest={d}', content=data[100:]).status_code == 201
    assert mount(client, 'four/repo', d, 'one/repo').status_code == 201
    blobs = files_under(root / 'blobs')
    assert len(blobs) == 1, blobs
    assert blobs[0].read_bytes() == data
    assert blobs[0].name == d.split(':')[1]
    for name in ('one/repo', 'two/repo', 'three/repo', 'four/repo'):
        r = client.get(f'/v2/{name}/blobs/{d}')
        assert r.status_code == 200
        assert r.content == data


def test_concurrent_sessions_of_the_same_blob_converge_to_one_file(tmp_path):
    root = tmp_path / 'data'
    client = InProcess(create_app(Config(root=root)))
    data = blob(1000, seed=4)
    d = digest(data)
    first = client.post('/v2/a/b/blobs/uploads/').headers['location']
    second = client.post('/v2/a/b/blobs/uploads/').headers['location']
    for location in (first, second):
        assert client.patch(location, content=data,
                            headers={'Content-Range': '0-999'}).status_code == 202
    assert client.put(f'{first}?digest={d}').status_code == 201
    assert client.put(f'{second}?digest={d}').status_code == 201
    assert len(files_under(root / 'blobs')) == 1
    assert client.get(f'/v2/a/b/blobs/{d}').content == data


def test_sha256_and_sha512_of_the_same_bytes_are_two_blobs(tmp_path):
    root = tmp_path / 'data'
    client = InProcess(create_app(Config(root=root)))
    data = blob(500, seed=6)
    d256 = push_blob(client, 'a/b', data, 'sha256')
    d512 = push_blob(client, 'a/b', data, 'sha512')
    assert client.get(f'/v2/a/b/blobs/{d256}').headers['docker-content-digest'] == d256
    assert client.get(f'/v2/a/b/blobs/{d512}').headers['docker-content-digest'] == d512
    assert len(files_under(root / 'blobs')) == 2


def test_finished_and_cancelled_uploads_leave_no_spool_behind(tmp_path):
    root = tmp_path / 'data'
    client = InProcess(create_app(Config(root=root)))
    data = blob(300, seed=8)
    push_blob(client, 'a/b', data)
    single_post(client, 'a/b', b'single')
    location = client.post('/v2/a/b/blobs/uploads/').headers['location']
    assert client.patch(location, content=data).status_code == 202
    assert client.delete(location).status_code == 204
    bad = client.post(f'/v2/a/b/blobs/uploads/?digest={digest(b"no")}', content=b'yes')
    assert bad.status_code == 400
    assert files_under(root / 'uploads') == []


def test_failed_single_post_stores_nothing(tmp_path):
    root = tmp_path / 'data'
    client = InProcess(create_app(Config(root=root)))
    r = client.post(f'/v2/a/b/blobs/uploads/?digest={digest(b"expected")}', content=b'sent')
    assert_error(r, 400, 'DIGEST_INVALID')
    assert files_under(root / 'blobs') == []
    assert client.head(f'/v2/a/b/blobs/{digest(b"sent")}').status_code == 404


# -- HTTP plumbing on blob URLs (§3.1, §5) ---------------------------------------------


def test_unknown_query_parameters_are_ignored_on_blob_reads(client, repo):
    data = blob(30)
    d = push_blob(client, repo, data)
    r = client.get(f'/v2/{repo}/blobs/{d}?ns=docker.io')
    assert r.status_code == 200
    assert r.content == data
    assert client.head(f'/v2/{repo}/blobs/{d}?ns=docker.io').status_code == 200
    assert client.delete(f'/v2/{repo}/blobs/{d}?ns=docker.io').status_code == 202


def test_every_blob_response_has_api_version_header(client, repo):
    data = blob(2048)
    d = push_blob(client, repo, data)
    other = f'{repo}-o'
    responses = [
        client.get(f'/v2/{repo}/blobs/{d}'),
        client.head(f'/v2/{repo}/blobs/{d}'),
        client.get(f'/v2/{repo}/blobs/{d}', headers={'Range': 'bytes=0-9'}),
        client.get(f'/v2/{repo}/blobs/{d}', headers={'Range': 'bytes=9000-'}),
        client.get(f'/v2/{repo}/blobs/{digest(b"missing")}'),
        client.head(f'/v2/{repo}/blobs/{digest(b"missing")}'),
        client.get(f'/v2/{repo}/blobs/sha256:short'),
        client.head(f'/v2/{repo}/blobs/sha256:short'),
        client.get(f'/v2/BAD/blobs/{d}'),
        mount(client, other, d, repo),
        mount(client, f'{repo}-p', digest(b'missing'), repo),
        client.delete(f'/v2/{other}/blobs/{d}'),
        client.delete(f'/v2/{other}/blobs/{d}'),
    ]
    assert [r.status_code for r in responses] == [200, 200, 206, 416, 404, 404, 400, 400,
                                                  400, 201, 202, 202, 404]
    for r in responses:
        assert r.headers['docker-distribution-api-version'] == 'registry/2.0'


@pytest.mark.parametrize('accept', ['application/octet-stream', 'text/html', '*/*',
                                    'application/vnd.oci.image.manifest.v1+json', None])
def test_blob_error_bodies_are_the_spec_envelope_whatever_the_accept_header(client, repo,
                                                                            accept):
    headers = {'Accept': accept} if accept else {}
    push_blob(client, repo, b'present')
    missing = digest(b'missing')
    cases = [
        (client.get(f'/v2/{repo}/blobs/{missing}', headers=headers), 404, 'BLOB_UNKNOWN'),
        (client.delete(f'/v2/{repo}/blobs/{missing}', headers=headers), 404,
         'BLOB_UNKNOWN'),
        (client.get(f'/v2/{repo}/blobs/sha256:nope', headers=headers), 400,
         'DIGEST_INVALID'),
        (client.delete(f'/v2/{repo}/blobs/md5:{"0" * 32}', headers=headers), 400,
         'DIGEST_INVALID'),
        (client.get(f'/v2/Upper/blobs/{missing}', headers=headers), 400, 'NAME_INVALID'),
    ]
    for r, code, name in cases:
        err = assert_error(r, code, name)
        assert isinstance(err['message'], str)


def test_blob_digest_path_with_unknown_session_like_value_is_not_an_upload(client, repo):
    # /blobs/<uuid> is a blob lookup (digest grammar), not an upload-session URL.
    push_blob(client, repo, b'x')
    assert_error(client.get(f'/v2/{repo}/blobs/{uuid.uuid4()}'), 400, 'DIGEST_INVALID')
