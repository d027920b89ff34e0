"""Blob uploads: distribution-spec §Pushing blobs (end-4a/4b/4c, end-5, end-6),
checklist §1.3-1.5 (R24-R38), §3.11 and §6. Upload status, cancel, session identity
and HTTP plumbing (end-13, end-14, §3.1-3.2, §5) are in test_upload_sessions.py.

Every test names the rule it proves. Flows run in-process over a fresh storage root.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.api.uploads_support import (
    ALGORITHMS,
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

# -- end-4a/end-6: POST then PUT (R25-R28) ---------------------------------------------


def test_r25_post_opens_session_202_with_location_range_and_upload_uuid(client, repo):
    r = client.post(f'/v2/{repo}/blobs/uploads/')
    assert_session(r, repo, 202, None)
    assert r.headers['content-length'] == '0'
    assert r.content == b''


def test_r26_each_post_opens_a_distinct_uuid_session(client, repo):
    ids = set()
    for _ in range(3):
        r = client.post(f'/v2/{repo}/blobs/uploads/')
        assert r.status_code == 202
        session_id = r.headers['location'].split('?')[0].rsplit('/', 1)[1]
        uuid.UUID(session_id)  # the Location carries a UUID
        assert r.headers['docker-upload-uuid'] == session_id
        ids.add(session_id)
    assert len(ids) == 3


def test_r27_upload_location_is_an_absolute_path_under_v2_name(client, repo):
    location = start(client, repo)
    assert location.startswith(f'/v2/{repo}/blobs/uploads/')


@pytest.mark.parametrize('algorithm', ALGORITHMS)
def test_r28_post_then_put_with_body_is_201_and_pullable(client, repo, algorithm):
    data = blob(3000)
    d = digest(data, algorithm)
    location = start(client, repo)
    r = put(client, location, d, data)
    assert_created(r, repo, d)
    assert_blob(client, repo, data, d)


def test_r28_201_location_gets_the_blob(client, repo):
    data = blob(777)
    d = digest(data)
    r = put(client, start(client, repo), d, data)
    assert r.status_code == 201
    got = client.get(r.headers['location'])
    assert got.status_code == 200
    assert got.content == data


# -- end-4b: single POST (R29, R30) ----------------------------------------------------


@pytest.mark.parametrize('algorithm', ALGORITHMS)
def test_single_post_with_digest_is_201(client, repo, algorithm):
    data = blob(1234)
    d = digest(data, algorithm)
    r = client.post(f'/v2/{repo}/blobs/uploads/?digest={d}', content=data,
                    headers={'Content-Type': 'application/octet-stream'})
    assert_created(r, repo, d)
    assert_blob(client, repo, data, d)


def test_r30_single_post_location_gets_the_blob(client, repo):
    data = blob(99)
    d = digest(data)
    r = client.post(f'/v2/{repo}/blobs/uploads/?digest={d}', content=data)
    assert r.status_code == 201
    got = client.get(r.headers['location'])
    assert got.status_code == 200
    assert got.content == data


def test_r29_single_post_with_mismatching_digest_is_400_and_stores_nothing(client, repo):
    data = blob(500)
    wrong = digest(data + b'!')
    r = client.post(f'/v2/{repo}/blobs/uploads/?digest={wrong}', content=data)
    assert_error(r, 400, 'DIGEST_INVALID')
    assert_absent(client, repo, wrong)
    assert_absent(client, repo, digest(data))


# -- end-4c / chunked-session start (R31-R33) ------------------------------------------


def test_r31_post_with_content_length_zero_and_json_content_type_is_202(client, repo):
    # ggcr opens sessions with Content-Type: application/json and no body.
    r = client.post(f'/v2/{repo}/blobs/uploads/', content=b'',
                    headers={'Content-Length': '0', 'Content-Type': 'application/json'})
    assert_session(r, repo, 202, None)


def test_r32_digest_algorithm_sha512_session_completes_with_sha512(client, repo):
    data = blob(2500)
    d = digest(data, 'sha512')
    location = start(client, repo, '?digest-algorithm=sha512')
    r = patch(client, location, data[:1000], 0)
    assert_session(r, repo, 202, 999)
    r = patch(client, r.headers['location'], data[1000:], 1000)
    assert_session(r, repo, 202, 2499)
    assert_created(put(client, r.headers['location'], d), repo, d)
    assert_blob(client, repo, data, d)


def test_r32_digest_algorithm_sha256_is_accepted(client, repo):
    data = blob(10)
    d = digest(data)
    location = start(client, repo, '?digest-algorithm=sha256')
    assert_created(put(client, location, d, data), repo, d)


@pytest.mark.parametrize('algorithm', ['md5', 'sha1', 'SHA256', 'bogus'])
def test_r24_unsupported_digest_algorithm_on_post_is_400_digest_invalid(client, repo,
                                                                      algorithm):
    r = client.post(f'/v2/{repo}/blobs/uploads/?digest-algorithm={algorithm}')
    assert_error(r, 400, 'DIGEST_INVALID')


def test_r33_one_byte_chunks_are_accepted_whatever_chunk_min_length_says(
        client, backend, repo):
    r = client.post(f'/v2/{repo}/blobs/uploads/')
    # Advertised only where a size is efficient (S3's part minimum), never enforced.
    assert r.headers.get('oci-chunk-min-length') == backend.chunk_min_length
    location = r.headers['location']
    data = blob(5)
    for i in range(len(data)):
        r = patch(client, location, data[i:i + 1], i)
        assert_session(r, repo, 202, i)
        location = r.headers['location']
    d = digest(data)
    assert_created(put(client, location, d), repo, d)
    assert_blob(client, repo, data, d)


# -- end-5: chunked PATCH with Content-Range (R34-R36) ---------------------------------


@pytest.mark.parametrize('algorithm', ALGORITHMS)
def test_r35_chunked_patch_is_202_with_range_equal_to_content_range_end(client, repo,
                                                                      algorithm):
    data = blob(3000)
    d = digest(data, algorithm)
    location = start(client, repo)
    for first, last in [(0, 999), (1000, 1999), (2000, 2999)]:
        r = patch(client, location, data[first:last + 1], first)
        assert_session(r, repo, 202, last)
        assert r.headers['content-length'] == '0'
        location = r.headers['location']
    assert_created(put(client, location, d), repo, d)
    assert_blob(client, repo, data, d)


def test_r35_range_header_has_no_bytes_prefix(client, repo):
    location = start(client, repo)
    r = patch(client, location, b'abcd', 0)
    assert r.headers['range'] == '0-3'
    assert not r.headers['range'].startswith('bytes')
    assert status(client, location).headers['range'] == '0-3'


def test_r36_chunk_not_starting_at_current_size_is_416_and_session_survives(client, repo):
    data = blob(300)
    location = start(client, repo)
    assert patch(client, location, data[:100], 0).status_code == 202
    # A gap: starts past the current size.
    r = patch(client, location, data[150:200], 150)
    assert_range_error(r, repo, 99)
    # Nothing was appended, and the session continues where it was.
    assert status(client, location).headers['range'] == '0-99'
    r = patch(client, r.headers['location'], data[100:], 100)
    assert_session(r, repo, 202, 299)
    d = digest(data)
    assert_created(put(client, r.headers['location'], d), repo, d)
    assert_blob(client, repo, data, d)


def test_r36_resending_an_accepted_chunk_is_416_and_session_survives(client, repo):
    data = blob(200)
    location = start(client, repo)
    assert patch(client, location, data[:100], 0).status_code == 202
    # The identical, already accepted range again (legacy "Retry previous blob chunk").
    r = patch(client, location, data[:100], 0)
    assert_range_error(r, repo, 99)
    # A range overlapping the received bytes.
    r = patch(client, location, data[50:150], 50)
    assert_range_error(r, repo, 99)
    assert patch(client, location, data[100:], 100).status_code == 202
    d = digest(data)
    assert_created(put(client, location, d), repo, d)
    assert_blob(client, repo, data, d)


def test_r36_first_chunk_not_starting_at_zero_is_416(client, repo):
    location = start(client, repo)
    r = patch(client, location, b'abc', 1)
    assert_range_error(r, repo, None)
    # Still empty: the first chunk at 0 is accepted.
    r = patch(client, location, b'abc', 0)
    assert_session(r, repo, 202, 2)


@pytest.mark.parametrize('value',
                         ['abc', '3-2', '-5', '3-', '3', '3-5-7', '', 'three-five'])
def test_r34_malformed_content_range_is_416_and_session_survives(client, repo, value):
    location = start(client, repo)
    assert patch(client, location, b'xyz', 0).status_code == 202
    r = client.patch(location, content=b'abc', headers={'Content-Range': value})
    assert_range_error(r, repo, 2)
    assert status(client, location).headers['range'] == '0-2'
    data = b'xyzabc'
    assert patch(client, location, b'abc', 3).status_code == 202
    d = digest(data)
    assert_created(put(client, location, d), repo, d)
    assert_blob(client, repo, data, d)


@pytest.mark.parametrize('body_size', [5, 15])
def test_content_length_not_matching_content_range_is_400_size_invalid_nothing_appended(
    client, repo, body_size
):
    location = start(client, repo)
    assert patch(client, location, b'0123456789', 0).status_code == 202
    # Content-Range announces 10 bytes, the body has another size.
    r = client.patch(location, content=blob(body_size),
                     headers={'Content-Range': '10-19'})
    assert_error(r, 400, 'SIZE_INVALID')
    r = status(client, location)
    assert r.status_code == 204
    assert r.headers['range'] == '0-9'
    data = b'0123456789' + b'abcdefghij'
    assert patch(client, location, data[10:], 10).status_code == 202
    d = digest(data)
    assert_created(put(client, location, d), repo, d)
    assert_blob(client, repo, data, d)


def test_patch_and_put_without_content_type_are_accepted(client, repo):
    data = blob(40)
    location = start(client, repo)
    r = client.patch(location, content=data[:20], headers={'Content-Range': '0-19'})
    assert_session(r, repo, 202, 19)
    r = client.patch(location, content=data[20:30])
    assert_session(r, repo, 202, 29)
    r = client.put(f'{location}?digest={digest(data)}', content=data[30:])
    assert_created(r, repo, digest(data))
    assert_blob(client, repo, data, digest(data))


# -- end-5 without Content-Range: streamed ---------------------------------------------


@pytest.mark.parametrize('algorithm', ALGORITHMS)
def test_streamed_patch_without_content_range_appends_at_current_size(client, repo,
                                                                       algorithm):
    data = blob(4000)
    d = digest(data, algorithm)
    location = start(client, repo)
    r = patch(client, location, data[:2500])
    assert_session(r, repo, 202, 2499)
    r = patch(client, r.headers['location'], data[2500:])
    assert_session(r, repo, 202, 3999)
    assert_created(put(client, r.headers['location'], d), repo, d)
    assert_blob(client, repo, data, d)


def test_streamed_patch_after_chunked_patch_continues_the_blob(client, repo):
    data = blob(60)
    location = start(client, repo)
    assert patch(client, location, data[:20], 0).status_code == 202
    r = patch(client, location, data[20:])
    assert_session(r, repo, 202, 59)
    d = digest(data)
    assert_created(put(client, location, d), repo, d)
    assert_blob(client, repo, data, d)


# -- end-6: the closing PUT (R37, R38) -------------------------------------------------


@pytest.mark.parametrize('algorithm', ALGORITHMS)
def test_r37_final_chunk_in_closing_put_with_content_range_is_201(client, repo, algorithm):
    data = blob(2100)
    d = digest(data, algorithm)
    location = start(client, repo)
    r = patch(client, location, data[:1000], 0)
    assert r.status_code == 202
    r = put(client, r.headers['location'], d, data[1000:],
            headers={'Content-Range': f'1000-{len(data) - 1}'})
    assert_created(r, repo, d)
    assert_blob(client, repo, data, d)


@pytest.mark.parametrize('algorithm', ALGORITHMS)
def test_r37_final_chunk_in_closing_put_without_content_range_is_201(client, repo,
                                                                     algorithm):
    data = blob(2100)
    d = digest(data, algorithm)
    location = start(client, repo)
    assert patch(client, location, data[:700]).status_code == 202
    assert_created(put(client, location, d, data[700:]), repo, d)
    assert_blob(client, repo, data, d)


def test_r37_closing_put_digest_covers_the_whole_blob_not_the_last_chunk(client, repo):
    data = blob(400)
    location = start(client, repo)
    assert patch(client, location, data[:300], 0).status_code == 202
    r = put(client, location, digest(data[300:]), data[300:],
            headers={'Content-Range': '300-399'})
    assert_error(r, 400, 'DIGEST_INVALID')
    assert_absent(client, repo, digest(data[300:]))


def test_r38_final_chunk_out_of_order_in_put_is_416_and_session_survives(client, repo):
    data = blob(300)
    d = digest(data)
    location = start(client, repo)
    assert patch(client, location, data[:100], 0).status_code == 202
    # Rewinds to 0 (new suite "out-of-order and put chunk").
    r = put(client, location, d, data, headers={'Content-Range': '0-299'})
    assert_range_error(r, repo, 99)
    # Skips ahead.
    r = put(client, location, d, data[200:], headers={'Content-Range': '200-299'})
    assert_range_error(r, repo, 99)
    assert_absent(client, repo, d)
    r = put(client, r.headers['location'], d, data[100:],
            headers={'Content-Range': '100-299'})
    assert_created(r, repo, d)
    assert_blob(client, repo, data, d)


def test_closing_put_with_mismatching_content_length_and_range_is_400_size_invalid(
    client, repo
):
    data = blob(30)
    location = start(client, repo)
    assert patch(client, location, data[:10], 0).status_code == 202
    r = put(client, location, digest(data), data[10:], headers={'Content-Range': '10-39'})
    assert_error(r, 400, 'SIZE_INVALID')
    assert status(client, location).headers['range'] == '0-9'
    assert_created(put(client, location, digest(data), data[10:]), repo, digest(data))


def test_put_without_digest_is_400_digest_invalid_and_session_survives(client, repo):
    data = blob(50)
    location = start(client, repo)
    assert patch(client, location, data, 0).status_code == 202
    r = put(client, location, None)
    assert_error(r, 400, 'DIGEST_INVALID')
    r = status(client, location)
    assert r.status_code == 204
    assert r.headers['range'] == '0-49'
    assert_created(put(client, location, digest(data)), repo, digest(data))


def test_put_with_empty_digest_parameter_is_400_digest_invalid(client, repo):
    location = start(client, repo)
    r = client.put(f'{location}?digest=', content=b'abc')
    assert_error(r, 400, 'DIGEST_INVALID')


def test_digest_mismatch_on_closing_put_keeps_session_and_earlier_data(client, repo):
    data = blob(1500)
    d = digest(data)
    location = start(client, repo)
    assert patch(client, location, data[:1000], 0).status_code == 202
    # Wrong digest, with a final chunk: refused, and that chunk is not kept.
    r = put(client, location, digest(b'something else'), data[1000:],
            headers={'Content-Range': '1000-1499'})
    assert_error(r, 400, 'DIGEST_INVALID')
    r = status(client, location)
    assert r.status_code == 204
    assert r.headers['range'] == '0-999'
    assert_absent(client, repo, d)
    # Retry with the right digest and the same final chunk.
    r = put(client, location, d, data[1000:], headers={'Content-Range': '1000-1499'})
    assert_created(r, repo, d)
    assert_blob(client, repo, data, d)


def test_digest_mismatch_on_empty_closing_put_allows_retry(client, repo):
    data = blob(100)
    d = digest(data, 'sha512')
    location = start(client, repo)
    assert patch(client, location, data).status_code == 202
    wrong = digest(data + b'x', 'sha512')
    assert_error(put(client, location, wrong), 400, 'DIGEST_INVALID')
    assert_absent(client, repo, d)
    assert_created(put(client, location, d), repo, d)
    assert_blob(client, repo, data, d)


def test_digest_query_with_percent_encoded_colon_is_accepted(client, repo):
    # Go clients encode ':' in the query.
    data = blob(64)
    d = digest(data)
    location = start(client, repo)
    r = client.put(f'{location}?digest={d.replace(":", "%3A")}', content=data)
    assert_created(r, repo, d)


# -- empty and tiny blobs --------------------------------------------------------------


@pytest.mark.parametrize('algorithm', ALGORITHMS)
@pytest.mark.parametrize('style', ['post only', 'post+put', 'put after empty patch'])
def test_empty_blob_upload_is_201_and_pullable(client, repo, algorithm, style):
    d = digest(b'', algorithm)
    if style == 'post only':
        r = client.post(f'/v2/{repo}/blobs/uploads/?digest={d}', content=b'',
                        headers={'Content-Length': '0'})
    elif style == 'post+put':
        r = put(client, start(client, repo), d)
    else:
        location = start(client, repo)
        assert patch(client, location, b'').status_code == 202
        r = put(client, location, d)
    assert_created(r, repo, d)
    assert_blob(client, repo, b'', d)


@pytest.mark.parametrize('algorithm', ALGORITHMS)
def test_empty_json_blob_upload_is_201_and_pullable(client, repo, algorithm):
    d = digest(b'{}', algorithm)
    r = client.post(f'/v2/{repo}/blobs/uploads/?digest={d}', content=b'{}')
    assert_created(r, repo, d)
    assert_blob(client, repo, b'{}', d)
    location = start(client, repo)
    assert patch(client, location, b'{}', 0).status_code == 202
    assert_created(put(client, location, d), repo, d)


# -- bad digests for every upload style (R24, §6) --------------------------------------


def _bad_digests(data: bytes, algorithm: str) -> dict[str, str]:
    hexdigest = hashlib.new(algorithm, data).hexdigest()
    return {
        'no colon': hexdigest,
        'not hex': f'{algorithm}:' + 'z' * len(hexdigest),
        'hex too short': f'{algorithm}:{hexdigest[:-1]}',
        'hex too long': f'{algorithm}:{hexdigest}0',
        'upper-case hex': f'{algorithm}:{hexdigest.upper()}',
        'unsupported algorithm': f'md5:{hashlib.md5(data).hexdigest()}',
        'empty encoded': f'{algorithm}:',
        'mismatching content': digest(data + b'oh no', algorithm),
    }


def _post_only(c: Any, name: str, data: bytes, d: str) -> Any:
    return c.post(f'/v2/{name}/blobs/uploads/?digest={d}', content=data)


def _post_put(c: Any, name: str, data: bytes, d: str) -> Any:
    return put(c, start(c, name), d, data)


def _chunked(c: Any, name: str, data: bytes, d: str) -> Any:
    location = start(c, name)
    for first in range(0, len(data), 700):
        assert patch(c, location, data[first:first + 700], first).status_code == 202
    return put(c, location, d)


def _chunked_put_chunk(c: Any, name: str, data: bytes, d: str) -> Any:
    location = start(c, name)
    assert patch(c, location, data[:700], 0).status_code == 202
    return put(c, location, d, data[700:],
               headers={'Content-Range': f'700-{len(data) - 1}'})


def _stream(c: Any, name: str, data: bytes, d: str) -> Any:
    location = start(c, name)
    assert patch(c, location, data).status_code == 202
    return put(c, location, d)


UPLOAD_STYLES: dict[str, Callable[[Any, str, bytes, str], Any]] = {
    'post only': _post_only,
    'post+put': _post_put,
    'chunked': _chunked,
    'chunked and put chunk': _chunked_put_chunk,
    'stream': _stream,
}


@pytest.mark.parametrize('algorithm', ALGORITHMS)
@pytest.mark.parametrize('variant', list(_bad_digests(b'', 'sha256')))
@pytest.mark.parametrize('style', list(UPLOAD_STYLES))
def test_r24_bad_digest_is_400_digest_invalid_for_every_upload_style(client, repo, style,
                                                                     variant, algorithm):
    data = blob(2000)
    bad = _bad_digests(data, algorithm)[variant]
    r = UPLOAD_STYLES[style](client, repo, data, bad)
    assert_error(r, 400, 'DIGEST_INVALID')
    assert_absent(client, repo, digest(data, algorithm))


@pytest.mark.parametrize('style', list(UPLOAD_STYLES))
def test_every_upload_style_succeeds_with_the_right_digest(client, repo, style):
    # The control for the bad-digest matrix: same data, same flows, right digest.
    data = blob(2000)
    d = digest(data)
    assert_created(UPLOAD_STYLES[style](client, repo, data, d), repo, d)
    assert_blob(client, repo, data, d)
