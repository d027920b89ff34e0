"""HTTP/1.1 on a real socket (checklist §3.1): what only the wire shows.

Chunked request bodies, HEAD framing, response Content-Length, ``Expect:
100-continue``, the API-version header on every response, the error envelope
whatever ``Accept`` says, ``%2F`` in names, and Location headers a client can follow.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from urllib.parse import urljoin

import httpx
import pytest

from tests.e2e._helpers import (
    MIB,
    RawResponse,
    chunked_frames,
    parse_head,
    raw,
    read_to_eof,
    read_until,
    request_bytes,
)
from tests.support import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    SPEC_CODES,
    Server,
    descriptor,
    digest,
    image_manifest,
    push_blob,
    push_image,
)

pytestmark = pytest.mark.e2e

API_VERSION = 'registry/2.0'
EMPTY_SHA256 = 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


class SentHeaders:
    """httpx request hook: the headers each request actually went out with."""

    def __init__(self) -> None:
        self.seen: list[httpx.Headers] = []

    def __call__(self, request: httpx.Request) -> None:
        self.seen.append(request.headers)

    def assert_last_chunked(self) -> None:
        h = self.seen[-1]
        assert h.get('transfer-encoding') == 'chunked', dict(h)
        assert 'content-length' not in h, dict(h)


@pytest.fixture
def wire(server: Server) -> Iterator[tuple[httpx.Client, SentHeaders]]:
    hook = SentHeaders()
    with httpx.Client(base_url=server.url, timeout=60,
                      event_hooks={'request': [hook]}) as c:
        yield c, hook


def open_session(c: httpx.Client, name: str) -> str:
    r = c.post(f'/v2/{name}/blobs/uploads/')
    assert r.status_code == 202, r.content
    return r.headers['location']


def pull_blob(c: httpx.Client, name: str, d: str) -> bytes:
    r = c.get(f'/v2/{name}/blobs/{d}')
    assert r.status_code == 200, r.content
    return r.content


def assert_framed(r: RawResponse) -> None:
    """A response that says exactly how long it is, and is exactly that long."""
    assert r.header('transfer-encoding') is None, r.raw_head
    assert len(r.all('content-length')) == 1, r.raw_head
    assert int(r.header('content-length') or -1) == len(r.body), (r.raw_head, r.body[:200])


# -- chunked request bodies -------------------------------------------------------------


def test_streamed_patch_with_chunked_body_is_accepted(wire, repo):
    """docker's streaming PATCH: Transfer-Encoding: chunked, no Content-Length, no
    Content-Range (§3.1, end-5)."""
    c, sent = wire
    data = os.urandom(3 * MIB + 12345)
    location = open_session(c, repo)
    r = c.patch(location, content=iter(pieces(data, 65536 + 7)),
                headers={'Content-Type': 'application/octet-stream'})
    sent.assert_last_chunked()
    assert r.status_code == 202, r.content
    assert r.headers['range'] == f'0-{len(data) - 1}'
    r = c.put(f'{r.headers["location"]}?digest={digest(data)}')
    assert r.status_code == 201, r.content
    assert r.headers['docker-content-digest'] == digest(data)
    assert pull_blob(c, repo, digest(data)) == data


def test_several_chunked_patches_then_chunked_put_are_accepted(wire, repo):
    """Each PATCH streamed without a length appends at the current offset; the
    closing PUT may carry the last chunk, chunked as well."""
    c, sent = wire
    data = os.urandom(200_001)
    parts = [data[:70_000], data[70_000:150_000], data[150_000:]]
    location = open_session(c, repo)
    for i, part in enumerate(parts[:-1]):
        r = c.patch(location, content=iter(pieces(part, 4099)))
        sent.assert_last_chunked()
        assert r.status_code == 202, r.content
        assert r.headers['range'] == f'0-{sum(map(len, parts[:i + 1])) - 1}'
        location = r.headers['location']
    r = c.put(f'{location}?digest={digest(data)}', content=iter(pieces(parts[-1], 999)))
    sent.assert_last_chunked()
    assert r.status_code == 201, r.content
    assert pull_blob(c, repo, digest(data)) == data


def test_chunked_monolithic_put_is_accepted(wire, repo):
    """POST, then the whole blob in one chunked PUT ?digest= (end-4a + end-6)."""
    c, sent = wire
    data = os.urandom(1 * MIB + 3)
    location = open_session(c, repo)
    r = c.put(f'{location}?digest={digest(data)}', content=iter(pieces(data, 32768)),
              headers={'Content-Type': 'application/octet-stream'})
    sent.assert_last_chunked()
    assert r.status_code == 201, r.content
    assert r.headers['docker-content-digest'] == digest(data)
    assert pull_blob(c, repo, digest(data)) == data


def test_chunked_post_with_digest_is_accepted(wire, repo):
    """The single-request push (end-4b) with a chunked body."""
    c, sent = wire
    data = os.urandom(500_000)
    r = c.post(f'/v2/{repo}/blobs/uploads/?digest={digest(data)}',
               content=iter(pieces(data, 10_000)),
               headers={'Content-Type': 'application/octet-stream'})
    sent.assert_last_chunked()
    assert r.status_code == 201, r.content
    assert r.headers['docker-content-digest'] == digest(data)
    assert pull_blob(c, repo, digest(data)) == data


def test_chunked_manifest_put_is_accepted(server, repo):
    """Go (and so the new conformance suite) sends manifest PUT bodies chunked; the
    digest is over the de-chunked bytes. Framed by hand, in odd-sized chunks."""
    with server.client() as c:
        config, layer = b'{"architecture":"amd64","os":"linux"}', b'chunked manifest layer'
        push_blob(c, repo, config)
        push_blob(c, repo, layer)
    body = image_manifest(config, [layer], annotations={'k': 'v' * 300})
    framed = chunked_frames(pieces(body, 7))
    r = raw(server.port, 'PUT', f'/v2/{repo}/manifests/v1', {
        'Content-Type': OCI_MANIFEST, 'Transfer-Encoding': 'chunked'}, framed)
    assert r.status == 201, r.body
    assert r.header('docker-content-digest') == digest(body)
    # ...and by digest, where the server must hash exactly the de-chunked bytes.
    r = raw(server.port, 'PUT', f'/v2/{repo}/manifests/{digest(body)}', {
        'Content-Type': OCI_MANIFEST, 'Transfer-Encoding': 'chunked'},
        chunked_frames(pieces(body, 1000)))
    assert r.status == 201, r.body
    with server.client() as c:
        got = c.get(f'/v2/{repo}/manifests/v1', headers={'Accept': OCI_MANIFEST})
        assert got.status_code == 200
        assert got.content == body
        assert got.headers['docker-content-digest'] == digest(body)


def test_chunked_index_put_is_accepted_with_httpx_generator(wire, repo):
    """Same rule through httpx's generator body (what a Python client sends)."""
    c, sent = wire
    m_digest, m_body = push_image(c, repo, 'child', seed='idx')
    body = json.dumps({'schemaVersion': 2, 'mediaType': OCI_INDEX, 'manifests': [
        descriptor(OCI_MANIFEST, m_body, platform={'os': 'linux', 'architecture': 'arm64'})
    ]}).encode()
    r = c.put(f'/v2/{repo}/manifests/multi', content=iter(pieces(body, 13)),
              headers={'Content-Type': OCI_INDEX})
    sent.assert_last_chunked()
    assert r.status_code == 201, r.content
    assert r.headers['docker-content-digest'] == digest(body)
    got = c.get(f'/v2/{repo}/manifests/{digest(body)}')
    assert got.content == body
    assert got.headers['content-type'] == OCI_INDEX
    assert m_digest in got.text


def test_aborted_chunked_patch_is_dropped_and_session_resumable(server, repo):
    """A client that drops the connection in the middle of a streamed PATCH (no
    terminating zero-length chunk) sent an incomplete message (RFC 9112 §8): none of
    it may join the blob. The session stays usable: not wedged by a lock, its Range
    where it was before the aborted request, and resumable from there."""
    data = os.urandom(300_000)
    with server.client() as c:
        location = open_session(c, repo)
        r = c.patch(location, content=data[:100_000],
                    headers={'Content-Range': f'0-{100_000 - 1}'})
        assert r.status_code == 202
    head = request_bytes('PATCH', location, server.port,
                         {'Transfer-Encoding': 'chunked', 'Connection': 'keep-alive'})
    with socket.create_connection(('127.0.0.1', server.port), timeout=10) as s:
        s.sendall(head + chunked_frames([data[100_000:130_000]])[:-5])  # no last-chunk
        s.shutdown(socket.SHUT_RDWR)
    with server.client() as c:
        deadline = time.monotonic() + 10
        while True:
            status = c.get(location)
            assert status.status_code == 204, status.content
            kept = int(status.headers['range'].split('-')[1]) + 1
            assert kept == 100_000, status.headers['range']
            # Resume from what the server reports; 416 while the aborted request is
            # still being torn down (its spool lock held) is allowed for a moment.
            r = c.patch(location, content=data[kept:250_000],
                        headers={'Content-Range': f'{kept}-{250_000 - 1}'})
            if r.status_code != 416 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert r.status_code == 202, r.content
        assert r.headers['range'] == f'0-{250_000 - 1}'
        r = c.put(f'{r.headers["location"]}?digest={digest(data)}', content=data[250_000:])
        assert r.status_code == 201, r.content
        assert pull_blob(c, repo, digest(data)) == data


# -- HEAD and GET framing --------------------------------------------------------------


def test_blob_head_carries_real_content_length_and_no_body(server, repo):
    data = os.urandom(123_457)
    with server.client() as c:
        d = push_blob(c, repo, data)
    r = raw(server.port, 'HEAD', f'/v2/{repo}/blobs/{d}')
    assert r.status == 200
    assert r.header('content-length') == str(len(data)), r.raw_head
    assert r.header('docker-content-digest') == d
    assert r.header('transfer-encoding') is None
    assert r.body == b'', r.body[:200]


def test_manifest_head_carries_real_content_length_and_no_body(server, repo):
    with server.client() as c:
        d, body = push_image(c, repo, 'v1', seed='head')
    for reference in ('v1', d):
        r = raw(server.port, 'HEAD', f'/v2/{repo}/manifests/{reference}',
                {'Accept': OCI_MANIFEST})
        assert r.status == 200
        assert r.header('content-length') == str(len(body)), r.raw_head
        assert r.header('docker-content-digest') == d
        assert r.header('content-type') == OCI_MANIFEST
        assert r.header('transfer-encoding') is None
        assert r.body == b'', r.body[:200]


def test_head_then_get_on_one_keepalive_connection_frame_correctly(server, repo):
    """Pipelined on one connection: if a HEAD leaked body bytes, or a GET sent more
    or fewer than its Content-Length, the second response would not parse."""
    data = os.urandom(70_001)
    with server.client() as c:
        d = push_blob(c, repo, data)
        _, m_body = push_image(c, repo, 'pipelined', seed='pipe')
    path = f'/v2/{repo}/blobs/{d}'
    wire_bytes = (
        request_bytes('HEAD', path, server.port, {'Connection': 'keep-alive'})
        + request_bytes('HEAD', f'/v2/{repo}/manifests/pipelined', server.port,
                        {'Connection': 'keep-alive'})
        + request_bytes('GET', path, server.port, {'Connection': 'keep-alive'})
        + request_bytes('GET', '/v2/', server.port)
    )
    with socket.create_connection(('127.0.0.1', server.port), timeout=30) as s:
        s.sendall(wire_bytes)
        buf = bytearray()
        heads = []
        for expect_body in (0, 0, len(data)):
            status, _, headers = parse_head(read_until(s, buf, b'\r\n\r\n'))
            heads.append((status, dict(headers)))
            while len(buf) < expect_body:
                more = s.recv(1 << 20)
                assert more, f'EOF after {len(buf)} of {expect_body} body bytes'
                buf += more
            if expect_body:
                assert bytes(buf[:expect_body]) == data
                del buf[:expect_body]
            # Whatever follows is the start of the next response, nothing else.
            assert b'HTTP/'.startswith(bytes(buf[:5])), bytes(buf[:100])
        rest = read_to_eof(s, buf)
    assert [h[0] for h in heads] == [200, 200, 200]
    assert heads[0][1]['content-length'] == str(len(data))
    assert heads[1][1]['content-length'] == str(len(m_body))
    assert heads[2][1]['content-length'] == str(len(data))
    assert rest.startswith(b'HTTP/1.1 200'), rest[:200]
    assert rest[rest.index(b'\r\n\r\n') + 4:] == b'{}'


@pytest.mark.parametrize('size', [1, 4096, MIB, MIB + 1, 3 * MIB + 17])
def test_blob_get_has_exact_content_length_and_is_never_chunked(server, repo, size):
    """Sizes around the server's 1 MiB read chunk: streamed, but always framed by
    Content-Length."""
    data = os.urandom(size)
    with server.client() as c:
        d = push_blob(c, repo, data)
    r = raw(server.port, 'GET', f'/v2/{repo}/blobs/{d}')
    assert r.status == 200
    assert_framed(r)
    assert r.body == data


def test_empty_blob_get_and_head_say_content_length_0(server, repo):
    with server.client() as c:
        d = push_blob(c, repo, b'')
    assert d == EMPTY_SHA256
    for method in ('GET', 'HEAD'):
        r = raw(server.port, method, f'/v2/{repo}/blobs/{d}')
        assert r.status == 200, (method, r.body)
        assert r.header('content-length') == '0', (method, r.raw_head)
        assert r.header('transfer-encoding') is None, (method, r.raw_head)
        assert r.body == b''


def test_ranged_blob_get_has_exact_content_length(server, repo):
    data = os.urandom(3 * MIB)
    with server.client() as c:
        d = push_blob(c, repo, data)
    start, end = MIB - 10, 2 * MIB + 10
    r = raw(server.port, 'GET', f'/v2/{repo}/blobs/{d}', {'Range': f'bytes={start}-{end}'})
    assert r.status == 206
    assert_framed(r)
    assert r.header('content-range') == f'bytes {start}-{end}/{len(data)}'
    assert r.body == data[start:end + 1]


def test_json_gets_have_exact_content_length_and_are_never_chunked(server, repo):
    with server.client() as c:
        d, body = push_image(c, repo, 'v1', seed='json-get')
    for path, accept in [
        (f'/v2/{repo}/manifests/v1', OCI_MANIFEST),
        (f'/v2/{repo}/manifests/{d}', None),
        (f'/v2/{repo}/tags/list', None),
        (f'/v2/{repo}/referrers/{d}', None),
        ('/v2/_catalog', None),
        ('/v2/', None),
    ]:
        r = raw(server.port, 'GET', path, {'Accept': accept} if accept else {})
        assert r.status == 200, (path, r.body)
        assert_framed(r)
    assert raw(server.port, 'GET', f'/v2/{repo}/manifests/v1').body == body


# -- Expect: 100-continue --------------------------------------------------------------


def expect_continue(port: int, method: str, path: str, headers: dict[str, str],
                    body: bytes) -> tuple[bytes, RawResponse]:
    """Send headers with ``Expect: 100-continue``, wait for the interim response
    before sending the body (as curl does), return (interim head, final response)."""
    head = request_bytes(method, path, port,
                         {'Expect': '100-continue', 'Content-Length': str(len(body)),
                          **headers})
    with socket.create_connection(('127.0.0.1', port), timeout=10) as s:
        s.sendall(head)
        buf = bytearray()
        try:
            interim = read_until(s, buf, b'\r\n\r\n')
        except TimeoutError:
            pytest.fail(f'no interim response within 10 s to {method} with '
                        'Expect: 100-continue')
        if not interim.startswith(b'HTTP/1.1 100'):
            status, reason, hdrs = parse_head(interim)
            return interim, RawResponse(status, reason, hdrs, read_to_eof(s, buf), interim)
        s.sendall(body)
        final = read_until(s, buf, b'\r\n\r\n')
        rest = read_to_eof(s, buf)
    status, reason, hdrs = parse_head(final)
    return interim, RawResponse(status, reason, hdrs, rest, final)


def test_expect_100_continue_on_blob_put_works(server, repo):
    data = os.urandom(2 * MIB + 5)
    with server.client() as c:
        location = open_session(c, repo)
    interim, r = expect_continue(server.port, 'PUT', f'{location}?digest={digest(data)}',
                                 {'Content-Type': 'application/octet-stream'}, data)
    assert interim.startswith(b'HTTP/1.1 100'), interim
    assert r.status == 201, r.body
    assert r.header('docker-content-digest') == digest(data)
    with server.client() as c:
        assert pull_blob(c, repo, digest(data)) == data


def test_expect_100_continue_on_patch_and_manifest_put_works(server, repo):
    config, layer = b'{"os":"linux","architecture":"amd64"}', os.urandom(100_000)
    with server.client() as c:
        push_blob(c, repo, config)
        location = open_session(c, repo)
    interim, r = expect_continue(server.port, 'PATCH', location,
                                 {'Content-Type': 'application/octet-stream'}, layer)
    assert interim.startswith(b'HTTP/1.1 100'), interim
    assert r.status == 202, r.body
    assert r.header('range') == f'0-{len(layer) - 1}'
    with server.client() as c:
        put = c.put(f'{r.header("location")}?digest={digest(layer)}')
        assert put.status_code == 201, put.content
    body = image_manifest(config, [layer])
    interim, r = expect_continue(server.port, 'PUT', f'/v2/{repo}/manifests/v1',
                                 {'Content-Type': OCI_MANIFEST}, body)
    assert interim.startswith(b'HTTP/1.1 100'), interim
    assert r.status == 201, r.body
    assert r.header('docker-content-digest') == digest(body)


# -- headers on every response, errors as the JSON envelope --------------------------


def _error_requests(server: Server, repo: str) -> list[tuple[str, str, int, str | None]]:
    """(method, path, status, spec code) of requests that fail, one per kind."""
    with server.client() as c:
        push_image(c, repo, 'v1', seed='errors')
        location = open_session(c, repo)
    missing = 'sha256:' + 'ab' * 32
    return [
        ('GET', f'/v2/{repo}/blobs/{missing}', 404, 'BLOB_UNKNOWN'),
        ('GET', f'/v2/{repo}/manifests/nope', 404, 'MANIFEST_UNKNOWN'),
        ('GET', f'/v2/{repo}/manifests/{missing}', 404, 'MANIFEST_UNKNOWN'),
        ('GET', '/v2/no/such/repo/tags/list', 404, 'NAME_UNKNOWN'),
        ('GET', f'{location[:-4]}beef', 404, 'BLOB_UPLOAD_UNKNOWN'),
        ('GET', f'/v2/{repo}/blobs/not-a-digest', 400, 'DIGEST_INVALID'),
        ('GET', '/v2/Upper/Case/tags/list', 400, 'NAME_INVALID'),
        ('PUT', f'{location}?digest=sha256:{"0" * 64}', 400, 'DIGEST_INVALID'),
        ('PATCH', '/v2/', 405, None),
        ('POST', f'/v2/{repo}/manifests/v1', 405, None),
        ('GET', '/not-the-api', 404, None),
        ('GET', '/v2/_nothing_here', 404, None),
    ]


def test_every_response_carries_the_api_version_header(server, repo):
    """§3.1: Docker-Distribution-API-Version: registry/2.0 on successes, on every
    error (404/405/400/416) and on /v2/ (which answers 200 without a challenge)."""
    with server.client() as c:
        d, _ = push_image(c, repo, 'v1', seed='api-version')
        layer = push_blob(c, repo, b'api version layer')
        location = open_session(c, repo)
    cases = [(m, p) for m, p, _, _ in _error_requests(server, repo)] + [
        ('GET', '/v2/'), ('HEAD', '/v2/'), ('GET', '/v2'), ('HEAD', '/v2'),
        ('GET', '/v2/_catalog'), ('GET', f'/v2/{repo}/tags/list'),
        ('GET', f'/v2/{repo}/manifests/v1'), ('HEAD', f'/v2/{repo}/manifests/v1'),
        ('GET', f'/v2/{repo}/blobs/{layer}'), ('HEAD', f'/v2/{repo}/blobs/{layer}'),
        ('HEAD', f'/v2/{repo}/blobs/sha256:{"cd" * 32}'),
        ('HEAD', f'/v2/{repo}/manifests/missing'),
        ('GET', f'/v2/{repo}/referrers/{d}'),
        ('POST', f'/v2/{repo}/blobs/uploads/'),
        ('GET', location),
        ('OPTIONS', '/v2/'),
    ]
    seen = {}
    for method, path in cases:
        r = raw(server.port, method, path)
        seen[(method, path, r.status)] = r.all('docker-distribution-api-version')
    missing = {k: v for k, v in seen.items() if v != [API_VERSION]}
    assert not missing, missing
    statuses = {status for _, _, status in seen}
    assert {200, 202, 204, 400, 404, 405} <= statuses, statuses
    # /v2/ is the version check: 200, no auth challenge on an open registry.
    r = raw(server.port, 'GET', '/v2/')
    assert r.status == 200 and r.header('www-authenticate') is None
    # A 416 (out-of-order chunk) too.
    r = raw(server.port, 'PATCH', location, {'Content-Range': '5-9'}, b'01234')
    assert r.status == 416
    assert r.all('docker-distribution-api-version') == [API_VERSION]


@pytest.mark.parametrize('accept', [None, 'text/html', 'application/xml',
                                    'text/plain, */*;q=0.1', OCI_MANIFEST])
def test_errors_are_the_json_envelope_whatever_accept(server, repo, accept):
    headers = {'Accept': accept} if accept else {}
    for method, path, status, code in _error_requests(server, repo):
        r = raw(server.port, method, path, headers)
        assert r.status == status, (method, path, r.status, r.body)
        assert (r.header('content-type') or '').startswith('application/json'), (
            method, path, r.raw_head)
        assert_framed(r)
        body = json.loads(r.body)
        assert body['errors'], (method, path, body)
        for e in body['errors']:
            assert e['code'] in SPEC_CODES, (method, path, body)
            assert isinstance(e.get('message', ''), str)
        if code:
            assert body['errors'][0]['code'] == code, (method, path, body)


def test_head_errors_have_headers_but_no_body(server, repo):
    with server.client() as c:
        push_image(c, repo, 'v1', seed='head-errors')
    for path in (f'/v2/{repo}/blobs/sha256:{"ef" * 32}', f'/v2/{repo}/manifests/nope',
                 '/v2/never/pushed/manifests/latest'):
        r = raw(server.port, 'HEAD', path, {'Accept': 'text/html'})
        assert r.status == 404, (path, r.raw_head)
        assert r.body == b'', (path, r.body)
        assert r.header('docker-distribution-api-version') == API_VERSION


# -- names with %2F, and Location headers ----------------------------------------------


def test_percent_encoded_slashes_in_names_route_as_slashes(server, repo):
    """A client that escapes the '/' of a name (``a%2Fb``) addresses the same
    repository ``a/b``; sent on a raw socket so nothing normalises the path."""
    encoded = repo.replace('/', '%2F')
    assert '%2F' in encoded
    data = os.urandom(5000)
    r = raw(server.port, 'POST', f'/v2/{encoded}/blobs/uploads/')
    assert r.status == 202, r.body
    location = r.header('location') or ''
    assert location.startswith(f'/v2/{repo}/blobs/uploads/'), location
    r = raw(server.port, 'PUT', f'{location}?digest={digest(data)}', body=data)
    assert r.status == 201, r.body
    assert r.header('location') == f'/v2/{repo}/blobs/{digest(data)}'
    r = raw(server.port, 'GET', f'/v2/{repo}/blobs/{digest(data)}')
    assert r.status == 200 and r.body == data
    r = raw(server.port, 'HEAD', f'/v2/{encoded}/blobs/{digest(data)}')
    assert r.status == 200 and r.header('content-length') == str(len(data))
    # Manifests and listings too.
    config = b'{"os":"linux"}'
    raw(server.port, 'POST', f'/v2/{encoded}/blobs/uploads/?digest={digest(config)}',
        body=config)
    body = image_manifest(config, [data])
    r = raw(server.port, 'PUT', f'/v2/{encoded}/manifests/enc', {
        'Content-Type': OCI_MANIFEST}, body)
    assert r.status == 201, r.body
    assert r.header('location') == f'/v2/{repo}/manifests/{digest(body)}'
    r = raw(server.port, 'GET', f'/v2/{repo}/manifests/enc')
    assert r.status == 200 and r.body == body
    r = raw(server.port, 'GET', f'/v2/{encoded}/tags/list')
    assert r.status == 200
    assert json.loads(r.body) == {'name': repo, 'tags': ['enc']}
    with server.client() as c:
        assert repo in c.get('/v2/_catalog').json()['repositories']


def test_percent_encoded_colon_in_digests_is_decoded(server, repo):
    """Go's url package escapes ':' in query values (``digest=sha256%3A…``); some
    clients escape it in paths as well."""
    data = os.urandom(4321)
    d = digest(data)
    with server.client() as c:
        location = open_session(c, repo)
    r = raw(server.port, 'PUT', f'{location}?digest={d.replace(":", "%3A")}', body=data)
    assert r.status == 201, r.body
    assert r.header('docker-content-digest') == d
    r = raw(server.port, 'GET', f'/v2/{repo}/blobs/{d.replace(":", "%3A")}')
    assert r.status == 200 and r.body == data


def follow(server: Server, location: str) -> str:
    """What a client does with a Location: use it as-is if absolute, else resolve it
    against the registry's origin. Only origin-relative values are usable by every
    client (containerd needs a leading '/'); an absolute one must be this origin."""
    assert location.startswith(('/v2/', server.url + '/v2/')), location
    return urljoin(server.url + '/', location)


def test_location_headers_are_usable_as_is(server, repo):
    other = repo + '-mount-target'
    data = os.urandom(100_000)
    config = b'{"os":"linux","architecture":"arm64"}'
    with httpx.Client(timeout=60) as c:
        r = c.post(f'{server.url}/v2/{repo}/blobs/uploads/')
        assert r.status_code == 202
        url = follow(server, r.headers['location'])
        # GET status on the session's Location.
        r = c.get(url)
        assert r.status_code == 204, r.content
        r = c.patch(url, content=data[:60_000],
                    headers={'Content-Range': f'0-{60_000 - 1}'})
        assert r.status_code == 202, r.content
        url = follow(server, r.headers['location'])
        # A 416 carries a Location the client can resume from.
        r = c.patch(url, content=b'xx', headers={'Content-Range': '0-1'})
        assert r.status_code == 416
        assert r.headers['range'] == f'0-{60_000 - 1}'
        url = follow(server, r.headers['location'])
        sep = '&' if '?' in url else '?'
        r = c.put(f'{url}{sep}digest={digest(data)}', content=data[60_000:])
        assert r.status_code == 201, r.content
        r = c.get(follow(server, r.headers['location']))
        assert r.status_code == 200 and r.content == data
        # Monolithic POST ?digest=, then a manifest: their Locations pull them.
        r = c.post(f'{server.url}/v2/{repo}/blobs/uploads/?digest={digest(config)}',
                   content=config)
        assert r.status_code == 201, r.content
        assert c.get(follow(server, r.headers['location'])).content == config
        body = json.dumps({'schemaVersion': 2, 'mediaType': OCI_MANIFEST,
                           'config': descriptor(OCI_CONFIG, config),
                           'layers': [descriptor(OCI_LAYER, data)]}).encode()
        r = c.put(f'{server.url}/v2/{repo}/manifests/loc', content=body,
                  headers={'Content-Type': OCI_MANIFEST})
        assert r.status_code == 201, r.content
        got = c.get(follow(server, r.headers['location']))
        assert got.status_code == 200 and got.content == body
        # Cross-repository mount: 201 with the blob's Location in the target.
        r = c.post(f'{server.url}/v2/{other}/blobs/uploads/?mount={digest(data)}'
                   f'&from={repo}')
        assert r.status_code == 201, r.content
        got = c.get(follow(server, r.headers['location']))
        assert got.status_code == 200 and got.content == data
        assert f'/v2/{other}/' in str(got.url)
