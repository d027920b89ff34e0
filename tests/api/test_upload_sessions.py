"""Upload sessions: status (end-13, R39), cancel (end-14, R40), session identity
(§3.2, §6) and HTTP plumbing (§3.1, §5).

Every test names the rule it proves. Flows run in-process over a fresh storage root.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.api.uploads_support import (
    assert_absent,
    assert_blob,
    assert_created,
    assert_range_error,
    assert_session,
    blob,
    patch,
    put,
    start,
    status,
)
from tests.support import assert_error, digest

# -- end-13: upload status (R39) -------------------------------------------------------


def test_r39_upload_status_is_204_with_range(client, repo):
    location = start(client, repo)
    r = status(client, location)
    assert_session(r, repo, 204, None)
    assert r.content == b''
    assert patch(client, location, blob(1234), 0).status_code == 202
    r = status(client, location)
    assert_session(r, repo, 204, 1233)
    assert r.content == b''


def test_r39_status_location_continues_the_upload(client, repo):
    data = blob(100)
    location = start(client, repo)
    assert patch(client, location, data[:40], 0).status_code == 202
    r = status(client, location)
    assert r.status_code == 204
    # Resume from what the registry reports (the §Resumable Push use case).
    offset = int(r.headers['range'].split('-')[1]) + 1
    assert offset == 40
    r = patch(client, r.headers['location'], data[offset:], offset)
    assert_session(r, repo, 202, 99)
    assert_created(put(client, r.headers['location'], digest(data)), repo, digest(data))


def test_original_post_location_keeps_working_after_patch(client, repo):
    """Legacy suite: the POST Location is reused after a PATCH ("Get on stale blob upload
    should return 204", "Retry previous blob chunk should return 416")."""
    data = blob(200)
    original = start(client, repo)
    r = patch(client, original, data[:100], 0)
    assert r.status_code == 202
    r = status(client, original)
    assert_session(r, repo, 204, 99)
    r = patch(client, original, data[:100], 0)
    assert_range_error(r, repo, 99)
    assert patch(client, original, data[100:], 100).status_code == 202
    assert_created(put(client, original, digest(data)), repo, digest(data))
    assert_blob(client, repo, data, digest(data))


# -- end-14: cancel (R40) --------------------------------------------------------------


def test_r40_delete_upload_is_204_then_404(client, repo):
    data = blob(100)
    location = start(client, repo)
    assert patch(client, location, data, 0).status_code == 202
    r = client.delete(location)
    assert r.status_code == 204
    assert r.content == b''
    assert_error(status(client, location), 404, 'BLOB_UPLOAD_UNKNOWN')
    assert_error(patch(client, location, data, 100), 404, 'BLOB_UPLOAD_UNKNOWN')
    assert_error(patch(client, location, data), 404, 'BLOB_UPLOAD_UNKNOWN')
    assert_error(put(client, location, digest(data)), 404, 'BLOB_UPLOAD_UNKNOWN')
    assert_error(client.delete(location), 404, 'BLOB_UPLOAD_UNKNOWN')
    assert_absent(client, repo, digest(data))


def test_r40_cancelled_session_does_not_affect_other_sessions(client, repo):
    data = blob(100)
    first, second = start(client, repo), start(client, repo)
    assert patch(client, first, data, 0).status_code == 202
    assert patch(client, second, data, 0).status_code == 202
    assert client.delete(first).status_code == 204
    assert_created(put(client, second, digest(data)), repo, digest(data))


# -- session identity (§3.2, §6) -------------------------------------------------------


def _all_session_calls(c: Any, location: str) -> list[Any]:
    return [
        status(c, location),
        patch(c, location, b'abc', 0),
        patch(c, location, b'abc'),
        put(c, location, digest(b'abc'), b'abc'),
        c.delete(location),
    ]


def test_unknown_session_id_is_404_blob_upload_unknown(client, repo):
    start(client, repo)  # the repository exists; the session does not
    location = f'/v2/{repo}/blobs/uploads/{uuid.uuid4()}'
    for r in _all_session_calls(client, location):
        assert_error(r, 404, 'BLOB_UPLOAD_UNKNOWN')


@pytest.mark.parametrize('session_id', ['..', '...', 'not-a-uuid', '%2e%2e', 'etc',
                                        'tmp-' + '0' * 8, 'A' * 36])
def test_malformed_session_id_is_404_blob_upload_unknown(client, repo, session_id):
    start(client, repo)
    for r in _all_session_calls(client, f'/v2/{repo}/blobs/uploads/{session_id}'):
        assert_error(r, 404, 'BLOB_UPLOAD_UNKNOWN')


def test_path_traversal_session_path_is_404_and_touches_nothing(client, repo):
    data = blob(10)
    location = start(client, repo)
    assert patch(client, location, data, 0).status_code == 202
    for path in ('../../etc', '..%2F..%2Fetc', '..%2f..%2f..%2fuploads'):
        for method in ('get', 'patch', 'put', 'delete'):
            r = getattr(client, method)(f'/v2/{repo}/blobs/uploads/{path}', content=b'x')
            assert r.status_code == 404, (path, method, r.status_code)
            body = r.json()
            assert body['errors'], body
    # The real session is intact.
    r = status(client, location)
    assert r.status_code == 204
    assert r.headers['range'] == '0-9'


def test_finished_session_is_404_blob_upload_unknown(client, repo):
    data = blob(10)
    location = start(client, repo)
    assert_created(put(client, location, digest(data), data), repo, digest(data))
    for r in _all_session_calls(client, location):
        assert_error(r, 404, 'BLOB_UPLOAD_UNKNOWN')
    # The blob itself stays.
    assert_blob(client, repo, data, digest(data))


def test_finished_single_chunk_session_via_patch_is_404_afterwards(client, repo):
    data = blob(10)
    location = start(client, repo)
    assert patch(client, location, data, 0).status_code == 202
    assert_created(put(client, location, digest(data)), repo, digest(data))
    assert_error(status(client, location), 404, 'BLOB_UPLOAD_UNKNOWN')


def test_session_used_under_another_repository_is_404_and_survives(client, repo):
    data = blob(30)
    location = start(client, repo)
    assert patch(client, location, data[:10], 0).status_code == 202
    other = f'{repo}-other'
    start(client, other)  # the other repository exists too
    foreign = location.replace(f'/v2/{repo}/', f'/v2/{other}/', 1)
    assert foreign != location
    for r in _all_session_calls(client, foreign):
        assert_error(r, 404, 'BLOB_UPLOAD_UNKNOWN')
    assert_absent(client, other, digest(b'abc'))
    # Untouched in its own repository.
    r = status(client, location)
    assert r.status_code == 204
    assert r.headers['range'] == '0-9'
    assert patch(client, location, data[10:], 10).status_code == 202
    assert_created(put(client, location, digest(data)), repo, digest(data))
    assert_absent(client, other, digest(data))


def test_session_of_a_parent_repository_is_not_usable_from_a_child_name(client, repo):
    location = start(client, repo)
    session_id = location.rsplit('/', 1)[1]
    r = status(client, f'/v2/{repo}/sub/blobs/uploads/{session_id}')
    assert_error(r, 404, 'BLOB_UPLOAD_UNKNOWN')


# -- HTTP plumbing (§3.1) --------------------------------------------------------------


def test_post_blobs_uploads_without_trailing_slash_works(client, repo):
    r = client.post(f'/v2/{repo}/blobs/uploads')
    assert_session(r, repo, 202, None)
    data = blob(20)
    d = digest(data)
    r = client.post(f'/v2/{repo}/blobs/uploads?digest={d}', content=data)
    assert_created(r, repo, d)


def test_unknown_query_parameters_are_ignored_on_uploads(client, repo):
    data = blob(40)
    d = digest(data)
    r = client.post(f'/v2/{repo}/blobs/uploads/?ns=docker.io')
    assert_session(r, repo, 202, None)
    location = r.headers['location']
    r = client.patch(f'{location}?ns=docker.io&_state=abc', content=data[:20],
                     headers={'Content-Range': '0-19'})
    assert_session(r, repo, 202, 19)
    r = client.get(f'{location}?ns=docker.io')
    assert_session(r, repo, 204, 19)
    r = client.put(f'{location}?ns=docker.io&digest={d}&origin=x', content=data[20:])
    assert_created(r, repo, d)
    r = client.post(f'/v2/{repo}/blobs/uploads/?ns=docker.io&digest={digest(b"z")}',
                    content=b'z')
    assert_created(r, repo, digest(b'z'))


def test_upload_to_invalid_repository_name_is_400_name_invalid(client):
    for name in ('UPPER/case', 'a//b', 'trailing-/x', '-lead'):
        r = client.post(f'/v2/{name}/blobs/uploads/')
        assert_error(r, 400, 'NAME_INVALID')


def test_every_upload_response_has_api_version_header(client, repo):
    data = blob(30)
    location = start(client, repo)
    responses = [
        client.post(f'/v2/{repo}/blobs/uploads/'),
        patch(client, location, data[:10], 0),
        patch(client, location, data[:10], 0),  # 416
        client.patch(location, content=b'abc', headers={'Content-Range': '10-99'}),  # 400
        status(client, location),
        put(client, location, None),  # 400
        put(client, location, 'sha256:bad'),  # 400
        put(client, location, digest(data), data[10:]),  # 201
        status(client, location),  # 404
        client.post(f'/v2/{repo}/blobs/uploads/?digest={digest(b"q")}', content=b'q'),
        client.post(f'/v2/{repo}/blobs/uploads/?digest-algorithm=md5'),  # 400
        client.delete(start(client, repo)),  # 204
        client.post('/v2/BAD/blobs/uploads/'),  # 400 NAME_INVALID
    ]
    statuses = [r.status_code for r in responses]
    assert statuses == [202, 202, 416, 400, 204, 400, 400, 201, 404, 201, 400, 204, 400]
    for r in responses:
        assert r.headers['docker-distribution-api-version'] == 'registry/2.0'


@pytest.mark.parametrize('accept', ['application/octet-stream', 'text/html', '*/*',
                                    'application/vnd.oci.image.manifest.v1+json', None])
def test_upload_error_bodies_are_the_spec_envelope_whatever_the_accept_header(
    client, repo, accept
):
    headers = {'Accept': accept} if accept else {}
    location = start(client, repo)
    assert patch(client, location, b'abc', 0).status_code == 202
    cases = [
        (client.get(f'/v2/{repo}/blobs/uploads/{uuid.uuid4()}', headers=headers),
         404, 'BLOB_UPLOAD_UNKNOWN'),
        (client.patch(location, content=b'abc',
                      headers={**headers, 'Content-Range': '0-2'}),
         416, 'BLOB_UPLOAD_INVALID'),
        (client.patch(location, content=b'a',
                      headers={**headers, 'Content-Range': '3-9'}),
         400, 'SIZE_INVALID'),
        (client.put(location, content=b'', headers=headers), 400, 'DIGEST_INVALID'),
        (client.post(f'/v2/{repo}/blobs/uploads/?digest=sha256:nope', content=b'x',
                     headers=headers), 400, 'DIGEST_INVALID'),
        (client.post('/v2/No/blobs/uploads/', headers=headers), 400, 'NAME_INVALID'),
    ]
    for r, code, name in cases:
        err = assert_error(r, code, name)
        assert isinstance(err['message'], str)
