"""Hostile and malformed requests: every one a clear 4xx, and nothing written.

One server for the module, with a baseline: repository ``bad/base`` holding three
blobs and one open upload session (5 bytes acknowledged), and no manifest or tag.
Every test compares the storage root before and after (blob files, every metadata
table, the upload spools): a refused request leaves no trace, not even a repository
row or an empty spool. Requests go out on raw sockets, byte for byte, so nothing is
normalised on the way (``..``, ``%2e``, NUL, oversized headers).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.e2e._helpers import RawResponse, Started, chunked_frames, raw
from tests.e2e.faults import (
    assert_fsck_clean,
    blob_file_problems,
    blob_files,
    db_state,
    envelope,
    head_bytes,
    integrity_problems,
    log_problems,
    log_size,
    send_early,
    spools,
)
from tests.support import OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, Server, digest

pytestmark = pytest.mark.e2e

REPO = 'bad/base'
HELLO = b'hello world'
CONFIG = b'{"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}'
LAYER = b'a layer, not really gzip'
NEW = b'content that must never be stored'  # pushed by requests that must fail
MIB = 1 << 20
MAX_MANIFEST = 4 * MIB


@dataclass
class Env:
    srv: Server
    port: int
    session: str  # the open session's id (5 bytes acknowledged)
    location: str

    def req(self, method: str, path: str, headers: dict[str, str] | None = None,
            body: bytes = b'') -> RawResponse:
        return raw(self.port, method, path, headers, body)

    def envelope(self, r: RawResponse, statuses: Any, code: str | None = None
                 ) -> dict[str, Any]:
        """``faults.envelope``; a 5xx fails with the server's traceback attached."""
        if r.status >= 500:
            tail = self.srv.log.read_text(errors='replace').splitlines()[-25:]
            raise AssertionError(f'{r.status} {r.body[:300]!r}\nserver log:\n'
                                 + '\n'.join(tail))
        return envelope(r, statuses, code)


def valid_manifest(**extra: Any) -> bytes:
    """A manifest that WOULD be stored (its blobs are in bad/base)."""
    return json.dumps({
        'schemaVersion': 2,
        'mediaType': OCI_MANIFEST,
        'config': {'mediaType': OCI_CONFIG, 'digest': digest(CONFIG), 'size': len(CONFIG)},
        'layers': [{'mediaType': OCI_LAYER, 'digest': digest(LAYER), 'size': len(LAYER)}],
        **extra,
    }).encode()


@dataclass(frozen=True)
class Snapshot:
    files: frozenset[str]
    blobs: tuple[tuple[str, int], ...]
    links: frozenset[tuple[str, str]]
    repositories: frozenset[str]
    manifests: frozenset[tuple[str, str]]
    tags: tuple[tuple[tuple[str, str], str], ...]
    uploads: tuple[tuple[str, tuple[str, int]], ...]
    spools: frozenset[str]


def snapshot(srv: Server) -> Snapshot:
    s = db_state(srv.root)
    return Snapshot(frozenset(blob_files(srv.root)), tuple(sorted(s.blobs.items())),
                    frozenset(s.links), frozenset(s.repositories),
                    frozenset(s.manifests), tuple(sorted(s.tags.items())),
                    tuple(sorted(s.uploads.items())), frozenset(spools(srv.root)))


def diff(before: Snapshot, after: Snapshot) -> dict[str, Any]:
    out = {}
    for name in before.__dataclass_fields__:
        a, b = set(getattr(before, name)), set(getattr(after, name))
        if a != b:
            out[name] = {'added': sorted(map(str, b - a)), 'gone': sorted(map(str, a - b))}
    return out


@pytest.fixture(scope='module')
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    srv = Started(tmp_path_factory.mktemp('bad-input') / 'data')
    try:
        with httpx.Client(base_url=srv.url) as c:
            for data in (HELLO, CONFIG, LAYER):
                r = c.post(f'/v2/{REPO}/blobs/uploads/?digest={digest(data)}',
                           content=data)
                assert r.status_code == 201, r.content
            r = c.post(f'/v2/{REPO}/blobs/uploads/')
            assert r.status_code == 202
            location = r.headers['location']
            r = c.patch(location, content=b'abcde', headers={'Content-Range': '0-4'})
            assert r.status_code == 202 and r.headers['range'] == '0-4'
        yield Env(srv, srv.port, location.rsplit('/', 1)[1], location)
    finally:
        srv.stop()


@pytest.fixture(autouse=True)
def nothing_written(env: Env, request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test: the root is exactly as before, and the server logged no crash
    (unless the test already failed, on the 500 that the crash produced)."""
    before = snapshot(env.srv)
    log_start = log_size(env.srv)
    failed = request.session.testsfailed
    yield
    after = snapshot(env.srv)
    assert before == after, diff(before, after)
    crashes = log_problems(env.srv, since=log_start)
    assert not crashes or request.session.testsfailed > failed, crashes[:20]


def session_range(env: Env) -> str:
    r = env.req('GET', env.location)
    assert r.status == 204, (r.status, r.body[:200])
    return r.header('range') or ''


# -- names -----------------------------------------------------------------------------

BAD_NAMES = [
    '..', '%2e%2e', '%2E%2E', '.', '...', 'a/..', '../a', 'a/../b', 'a/%2e%2e/b',
    'a%2F..%2Fb', 'a/%2F..%2F/b', '..%2F..%2Fetc', 'x/../bad/base', 'bad/base/.',
    'bad/./base', 'bad%2Fbase%2F..%2Fbase', 'bad/base/..%2Fbase', 'bad//base',
    '/etc/passwd', '%2Fetc%2Fpasswd', '/bad/base', 'a%5C..%5Cb', 'a%00b', 'bad/base%00',
    '%00', 'a%0Ab', 'a%20b', 'A/B', 'Bad/base', 'bad/Base', 'a' * 256, 'a' * 300,
    'a/' + 'b' * 300, '/'.join(['a'] * 200), '-a', 'a-', 'a/_b', '%252e%252e',
]


@pytest.mark.parametrize('name', BAD_NAMES, ids=lambda n: n[:40])
def test_bad_repository_name(env: Env, name: str) -> None:
    """Traversal, absolute paths, NUL, upper case, 256+ characters: 400 NAME_INVALID
    (or 404) on every endpoint, including writes that would otherwise succeed."""
    d = digest(HELLO)
    cases = [
        ('POST', f'/v2/{name}/blobs/uploads/?digest={digest(NEW)}', {}, NEW),
        ('POST', f'/v2/{name}/blobs/uploads/', {}, b''),
        ('POST', f'/v2/{name}/blobs/uploads/?mount={d}&from={REPO}', {}, b''),
        ('PUT', f'/v2/{name}/manifests/v1', {'Content-Type': OCI_MANIFEST},
         valid_manifest()),
        ('PATCH', f'/v2/{name}/blobs/uploads/{env.session}',
         {'Content-Range': '5-9'}, b'fghij'),
        ('DELETE', f'/v2/{name}/blobs/{d}', {}, b''),
        ('GET', f'/v2/{name}/blobs/{d}', {}, b''),
        ('GET', f'/v2/{name}/manifests/v1', {}, b''),
        ('GET', f'/v2/{name}/tags/list', {}, b''),
        ('GET', f'/v2/{name}/referrers/{d}', {}, b''),
    ]
    for method, path, headers, body in cases:
        r = env.req(method, path, headers, body)
        first = env.envelope(r, (400, 404))
        if r.status == 400:
            assert first['code'] == 'NAME_INVALID', (method, path, first)
    assert session_range(env) == '0-4'


def test_raw_nul_in_request_line(env: Env) -> None:
    """An unencoded NUL never reaches the app: the HTTP parser refuses the request
    line, before any handler runs, still in the spec's envelope (oci_ref.protocol)."""
    for method, path, body in (
        ('POST', f'/v2/a\x00b/blobs/uploads/?digest={digest(NEW)}', NEW),
        ('PUT', f'/v2/{REPO}/manifests/v\x001', valid_manifest()),
        ('GET', f'/v2/{REPO}/blobs/uploads/{env.session}\x00', b''),
    ):
        r = env.req(method, path, {'Content-Type': OCI_MANIFEST}, body)
        env.envelope(r, (400,), 'UNSUPPORTED')


@pytest.mark.parametrize('method', ['GET', 'PUT'])
def test_request_line_over_64_kib_gets_414_in_the_envelope(env: Env, method: str) -> None:
    """Issue 12 §3: the HTTP parser cannot split a request target of 2^16 bytes or
    more; the refusal is a 414 with the spec's JSON body, not uvicorn's plain text."""
    path = f'/v2/{REPO}/manifests/v1?tag=' + 'x' * 70_000
    r = env.req(method, path, {'Content-Type': OCI_MANIFEST}, valid_manifest())
    first = env.envelope(r, (414,), 'UNSUPPORTED')
    assert first['detail']['received'] > 65535
    r = env.req('GET', f'/v2/{REPO}/tags/list?last=' + 'x' * 65_000)
    assert r.status in (200, 404), r.status  # just under the limit: the app answers


# -- session ids -----------------------------------------------------------------------


BAD_SESSION_IDS = [
    '..', '%2e%2e', '.', '..%2F..%2Foci-ref.db', '%2E%2E%2F%2E%2E%2Foci-ref.db',
    '..%2Fuploads%2F{sid}', '..%5C..%5Coci-ref.db', '%252e%252e%252foci-ref.db',
    'oci-ref.db', '..%2F..%2Fblobs', '{sid}%2F..', '%2F{sid}', '{sid}%00', '{SID}',
    '{sid_short}', '{sid}0', '%20{sid}', 'tmp-{sid}', '{sid_nodash}', '%2Ftmp%2F{sid}',
    'x' * 5000,
]


@pytest.mark.parametrize('template', BAD_SESSION_IDS, ids=lambda t: t[:40])
def test_session_id_traversal(env: Env, template: str) -> None:
    """Session ids that are not exactly a session's (traversal, encodings, case,
    prefixes): 404 for GET, PATCH, PUT and DELETE; the real session is untouched."""
    sid = template.format(sid=env.session, SID=env.session.upper(),
                          sid_short=env.session[:-1],
                          sid_nodash=env.session.replace('-', ''))
    path = f'/v2/{REPO}/blobs/uploads/{sid}'
    full = digest(b'abcdefghij')
    for method, suffix, headers, body in (
        ('GET', '', {}, b''),
        ('PATCH', '', {'Content-Range': '5-9'}, b'fghij'),
        ('PATCH', '', {}, b'fghij'),
        ('PUT', f'?digest={full}', {'Content-Range': '5-9'}, b'fghij'),
        ('PUT', f'?digest={digest(b"abcde")}', {}, b''),
        ('DELETE', '', {}, b''),
    ):
        r = env.req(method, path + suffix, headers, body)
        env.envelope(r, (404,))
    assert session_range(env) == '0-4'


def test_session_of_another_repository(env: Env) -> None:
    """A real session id under another repository is unknown there: a DELETE there
    does not cancel it, a PATCH there does not grow it."""
    for name in ('bad/other', 'bad/base/x', 'bad'):
        path = f'/v2/{name}/blobs/uploads/{env.session}'
        env.envelope(env.req('GET', path), (404,), 'BLOB_UPLOAD_UNKNOWN')
        env.envelope(env.req('PATCH', path, {'Content-Range': '5-9'}, b'fghij'), (404,),
                 'BLOB_UPLOAD_UNKNOWN')
        env.envelope(env.req('PUT', f'{path}?digest={digest(b"abcde")}'), (404,),
                 'BLOB_UPLOAD_UNKNOWN')
        env.envelope(env.req('DELETE', path), (404,), 'BLOB_UPLOAD_UNKNOWN')
    assert session_range(env) == '0-4'


# -- oversized headers and bodies ------------------------------------------------------


def test_header_limit_is_not_below_64k(env: Env) -> None:
    """The control: 32 KiB of headers are served."""
    r = env.req('GET', '/v2/', {'X-Padding': 'a' * 32 * 1024})
    assert r.status == 200, r.status


@pytest.mark.parametrize('shape', ['one-64k', 'one-1m', 'many-small'])
def test_oversized_headers(env: Env, shape: str) -> None:
    """64 KiB+ of request headers: 431 with the envelope, before any handler runs:
    a blob push, a manifest push, a session start and a chunk all write nothing."""
    headers = {
        'one-64k': {'X-Padding': 'a' * (64 * 1024 + 1)},
        'one-1m': {'X-Padding': 'a' * MIB},
        'many-small': {f'X-Padding-{i}': 'a' * 100 for i in range(700)},
    }[shape]
    for method, path, extra, body in (
        ('GET', '/v2/', {}, b''),
        ('POST', f'/v2/{REPO}/blobs/uploads/?digest={digest(NEW)}', {}, NEW),
        ('POST', f'/v2/{REPO}/blobs/uploads/', {}, b''),
        ('PUT', f'/v2/{REPO}/manifests/v1', {'Content-Type': OCI_MANIFEST},
         valid_manifest()),
        ('PATCH', env.location, {'Content-Range': '5-9'}, b'fghij'),
        ('DELETE', f'/v2/{REPO}/blobs/{digest(HELLO)}', {}, b''),
    ):
        all_headers = {**extra, **headers, 'Connection': 'close'}
        if body:
            all_headers['Content-Length'] = str(len(body))
        r = send_early(env.port, head_bytes(method, path, env.port, all_headers), [body])
        env.envelope(r, (431,))
    assert session_range(env) == '0-4'


def padded_manifest(total: int) -> bytes:
    """A valid manifest of exactly ``total`` bytes (padded in an annotation)."""
    body = valid_manifest(annotations={'pad': ''})
    return body.replace(b'"pad": ""', b'"pad": "' + b'x' * (total - len(body)) + b'"')


def test_manifest_of_4mib_plus_one(env: Env) -> None:
    """A manifest that would be valid, one byte over 4 MiB, with Content-Length: 413."""
    body = padded_manifest(MAX_MANIFEST + 1)
    assert len(body) == MAX_MANIFEST + 1
    r = send_early(env.port, head_bytes('PUT', f'/v2/{REPO}/manifests/big', env.port, {
        'Content-Type': OCI_MANIFEST, 'Content-Length': str(len(body)),
        'Connection': 'close'}), [body])
    env.envelope(r, (413,), 'MANIFEST_INVALID')
    # The same by digest.
    r = send_early(env.port, head_bytes('PUT', f'/v2/{REPO}/manifests/{digest(body)}',
                                        env.port, {
        'Content-Type': OCI_MANIFEST, 'Content-Length': str(len(body)),
        'Connection': 'close'}), [body])
    env.envelope(r, (413,), 'MANIFEST_INVALID')


@pytest.mark.parametrize('case', ['5mib-declared', '4.5mib-chunked', '40mib-chunked',
                                  '20mib-declared', '10e12-declared'])
def test_manifest_body_too_large(env: Env, case: str) -> None:
    """Over 4 MiB with Content-Length (drained up to 16 MiB so the client reads the
    413), chunked without a length, and a declared 10^12 bytes: 413, read early."""
    path = f'/v2/{REPO}/manifests/big'
    hdrs = {'Content-Type': OCI_MANIFEST, 'Connection': 'close'}

    def stream(total: int, piece: int = 64 * 1024) -> Iterator[bytes]:
        sent = 0
        while sent < total:
            n = min(piece, total - sent)
            yield b'x' * n
            sent += n

    if case == '5mib-declared':
        body: Any = [padded_manifest(5 * MIB)]
        hdrs['Content-Length'] = str(5 * MIB)
    elif case == '20mib-declared':
        body = stream(20 * MIB)
        hdrs['Content-Length'] = str(20 * MIB)
    elif case == '10e12-declared':
        body = stream(MIB)
        hdrs['Content-Length'] = str(10**12)
    else:
        total = int(4.5 * MIB) if case == '4.5mib-chunked' else 40 * MIB
        hdrs['Transfer-Encoding'] = 'chunked'
        body = chunked_stream(stream(total))
    t = time.monotonic()
    r = send_early(env.port, head_bytes('PUT', path, env.port, hdrs), body)
    env.envelope(r, (413,), 'MANIFEST_INVALID')
    assert time.monotonic() - t < 30
    if case == '5mib-declared':
        # Drained: even a client that sends everything before it reads gets the 413.
        r = env.req('PUT', path, {'Content-Type': OCI_MANIFEST}, padded_manifest(5 * MIB))
        env.envelope(r, (413,), 'MANIFEST_INVALID')


def chunked_stream(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """Transfer-Encoding: chunked framing, produced lazily."""
    for piece in pieces:
        yield b'%x\r\n%s\r\n' % (len(piece), piece)
    yield b'0\r\n\r\n'


# -- JSON bombs ------------------------------------------------------------------------


def _with(field: str, raw_value: str) -> bytes:
    """The valid manifest with ``field`` set to ``raw_value``, verbatim JSON text."""
    doc = json.loads(valid_manifest())
    doc[field] = '@@'
    return json.dumps(doc).replace('"@@"', raw_value).encode()


def _size(raw_value: str) -> bytes:
    """The valid manifest with the config's size set to ``raw_value``."""
    doc = json.loads(valid_manifest())
    doc['config']['size'] = '@@'
    return json.dumps(doc).replace('"@@"', raw_value).encode()


BOMBS: dict[str, Any] = {
    'nested-arrays-100k': lambda: b'[' * 100_000 + b']' * 100_000,
    'nested-objects-100k': lambda: b'{"a":' * 100_000 + b'1' + b'}' * 100_000,
    'nested-in-annotations-100k': lambda: _with('annotations',
                                                '{"a": ' + '[' * 100_000 + ']' * 100_000
                                                + '}'),
    'nested-in-layers-100k': lambda: _with('layers', '[' * 100_000 + ']' * 100_000),
    'nested-unknown-field-100k': lambda: _with('x', '[' * 100_000 + ']' * 100_000),
    'exponent-size': lambda: _size('1e99999999999999999999'),
    'exponent-unknown-field': lambda: _with('x', '1e99999999999999999999'),
    'negative-exponent-unknown-field': lambda: _with('x', '1e-99999999999999999999'),
    'int-5000-digits-size': lambda: _size('9' * 5000),
    'int-5000-digits-unknown-field': lambda: _with('x', '1' * 5000),
    'float-size': lambda: _size('11.0'),
    'nan': lambda: _with('x', 'NaN'),
    'infinity': lambda: _with('x', '-Infinity'),
    'duplicate-top-level-key': lambda: b'{"schemaVersion": 2, ' + valid_manifest()[1:],
    'duplicate-digest-in-config': lambda: valid_manifest().replace(
        b'"digest": "', b'"digest": "' + digest(HELLO).encode() + b'", "digest": "', 1),
    'duplicate-annotation': lambda: _with('annotations', '{"a": "1", "a": "2"}'),
    'invalid-utf8': lambda: valid_manifest().replace(b'"layers"', b'"lay\xffers"'),
    'utf16': lambda: valid_manifest().decode().encode('utf-16'),
    'utf8-bom': lambda: b'\xef\xbb\xbf' + valid_manifest(),
    'empty': lambda: b'',
    'whitespace': lambda: b' \r\n\t' * 1000,
    'null': lambda: b'null',
    'array': lambda: b'[]',
    'string': lambda: b'"manifest"',
    'truncated': lambda: valid_manifest()[:-1],
    'trailing-garbage': lambda: valid_manifest() + b'{}',
    'annotations-200k-ints': lambda: _with('annotations', json.dumps(
        {f'k{i}': i for i in range(200_000)})),
    'layers-1e6-empty-objects': lambda: _with('layers', '[' + ','.join(['{}'] * 10**6)
                                              + ']'),
    'layers-60-empty-objects': lambda: _with('layers', json.dumps([{}] * 60)),
    'layers-60-without-size': lambda: _with('layers', json.dumps(
        [{'mediaType': OCI_LAYER, 'digest': digest(LAYER)}] * 60)),
    'layers-60-integer-digests': lambda: _with('layers', json.dumps(
        [{'mediaType': OCI_LAYER, 'digest': 5, 'size': 1}] * 60)),
    'index-60-empty-objects': lambda: json.dumps({
        'schemaVersion': 2, 'mediaType': OCI_INDEX, 'manifests': [{}] * 60}).encode(),
}


@pytest.mark.parametrize('bomb', sorted(BOMBS))
def test_json_bomb(env: Env, bomb: str) -> None:
    """Hostile JSON within the size limit: 400 MANIFEST_INVALID, quickly, by tag and
    by digest, nothing stored."""
    body = BOMBS[bomb]()
    assert len(body) <= MAX_MANIFEST, len(body)
    index = bomb.startswith('index')
    for reference in ('bomb', digest(body)):
        t = time.monotonic()
        r = send_early(env.port, head_bytes('PUT', f'/v2/{REPO}/manifests/{reference}',
                                            env.port, {
            'Content-Type': OCI_INDEX if index else OCI_MANIFEST,
            'Content-Length': str(len(body)), 'Connection': 'close'}), [body])
        env.envelope(r, (400,), 'MANIFEST_INVALID')
        assert time.monotonic() - t < 10, f'{bomb}: {time.monotonic() - t:.1f}s'


def test_million_element_layers_while_serving(env: Env) -> None:
    """``layers: [0, 0, ...]`` with 10^6 elements (2 MB): 400 within a few seconds, and
    ``GET /v2/`` on other connections is answered meanwhile, promptly."""
    body = _with('layers', '[' + ','.join(['0'] * 10**6) + ']')
    assert len(body) <= MAX_MANIFEST
    sent = threading.Event()
    result: dict[str, Any] = {}

    def put() -> None:
        t = time.monotonic()
        head = head_bytes('PUT', f'/v2/{REPO}/manifests/bomb', env.port, {
            'Content-Type': OCI_MANIFEST, 'Content-Length': str(len(body)),
            'Connection': 'close'})

        def pieces() -> Iterator[bytes]:
            yield body
            sent.set()

        result['r'] = send_early(env.port, head, pieces())
        result['seconds'] = time.monotonic() - t
        result['done'] = time.monotonic()

    thread = threading.Thread(target=put)
    thread.start()
    assert sent.wait(30)
    gets: list[tuple[float, float, int]] = []  # (answered at, latency, status)
    while thread.is_alive():
        t = time.monotonic()
        r = raw(env.port, 'GET', '/v2/', timeout=10)
        gets.append((time.monotonic(), time.monotonic() - t, r.status))
    thread.join()
    env.envelope(result['r'], (400,), 'MANIFEST_INVALID')
    assert result['seconds'] < 5, result['seconds']
    meanwhile = [g for g in gets if g[0] < result['done']]
    assert all(status == 200 for _, _, status in gets), gets
    assert meanwhile, 'no GET /v2/ was answered while the PUT was being validated'
    # A blocked event loop holds some GET for about as long as the validation runs; a
    # loaded machine (make test runs in several processes) slows both alike.
    assert max(latency for _, latency, _ in gets) < max(1.0, result['seconds'] / 2), (
        result['seconds'], gets)


# -- ranges ----------------------------------------------------------------------------

BIG = '9' * 5000


@pytest.mark.parametrize('value, expect', [
    (f'bytes=0-{BIG}', (206, 0, 10)),
    (f'bytes=1-{BIG}', (206, 1, 10)),
    (f'bytes=-{BIG}', (206, 0, 10)),
    (f'bytes={BIG}-', 416),
    (f'bytes={BIG}-{BIG}', 416),
    (f'bytes={BIG}-1', 416),
    ('bytes=5-1', 416),
    ('bytes=-0', 416),
    ('bytes=0-0', (206, 0, 0)),
    ('bytes=10-', (206, 10, 10)),
    ('bytes=11-', 416),
    ('bytes=0-1,3-4', 200),
    ('bytes=abc', 200),
    ('items=0-1', 200),
    (f'bytes={BIG}', 200),
    (f'bytes 0-{BIG}', 200),
], ids=lambda v: str(v)[:30])
def test_range_header(env: Env, value: str, expect: Any) -> None:
    """Range with 5000-digit numbers (and other oddities): 206 or 416, never 5xx;
    what is sent is exactly the bytes the Content-Range names."""
    path = f'/v2/{REPO}/blobs/{digest(HELLO)}'
    r = env.req('GET', path, {'Range': value})
    if expect == 416:
        env.envelope(r, (416,))
        assert r.header('content-range') == f'bytes */{len(HELLO)}'
    elif expect == 200:
        assert r.status == 200 and r.body == HELLO, (r.status, r.body[:200])
    else:
        status, first, last = expect
        assert r.status == status, (r.status, r.body[:200])
        assert r.header('content-range') == f'bytes {first}-{last}/{len(HELLO)}'
        assert r.body == HELLO[first:last + 1]
    h = env.req('HEAD', path, {'Range': value})
    assert h.status in (200, 206, 416), h.status


def test_range_with_leading_zeros(env: Env) -> None:
    """RFC 9110 §14.1.1: first-pos and last-pos are 1*DIGIT, so leading zeros are
    allowed: ``bytes=000…001-000…005`` (5000 digits each) is bytes 1-5, satisfiable."""
    zeros = '0' * 4999
    r = env.req('GET', f'/v2/{REPO}/blobs/{digest(HELLO)}',
                {'Range': f'bytes={zeros}1-{zeros}5'})
    assert r.status == 206, (r.status, r.body[:200])
    assert r.body == HELLO[1:6]


@pytest.mark.parametrize('value', [
    f'0-{BIG}', f'5-{BIG}', f'{BIG}-{BIG}', f'{BIG}-1', f'bytes 5-{BIG}/*',
    f'5-9/{BIG}0-', '-5', '5-', 'a-b', '9-5', '5-9, 10-12', '', ' ', 'bytes=5-9-10',
    '5-9\t,', '0x5-0x9',
], ids=lambda v: v[:30])
def test_content_range(env: Env, value: str) -> None:
    """Content-Range with 5000-digit numbers and malformed values, on PATCH and on
    the closing PUT: 4xx with the envelope, and the session is exactly as before."""
    headers = {'Content-Range': value, 'Content-Type': 'application/octet-stream'}
    r = env.req('PATCH', env.location, headers, b'fghij')
    env.envelope(r, range(400, 417))
    r = env.req('PUT', f'{env.location}?digest={digest(b"abcdefghij")}', headers,
                b'fghij')
    env.envelope(r, range(400, 417))
    assert session_range(env) == '0-4'


def test_chunk_longer_than_its_range(env: Env) -> None:
    """A body longer than Content-Range says (declared, and chunked): SIZE_INVALID,
    session unchanged; a Content-Length of 5000 digits is refused too."""
    r = env.req('PATCH', env.location, {'Content-Range': '5-9'}, b'x' * 20)
    env.envelope(r, (400, 416), 'SIZE_INVALID')
    r = env.req('PATCH', env.location, {'Content-Range': '5-9',
                                        'Transfer-Encoding': 'chunked'},
                chunked_frames([b'x' * 20]))
    env.envelope(r, (400, 416), 'SIZE_INVALID')
    r = env.req('PATCH', env.location, {'Content-Length': BIG}, b'fghij')
    assert 400 <= r.status < 500, r.status
    assert session_range(env) == '0-4'


# -- digests ---------------------------------------------------------------------------

BAD_DIGESTS = {
    'empty-hex': 'sha256:',
    'short': 'sha256:abc',
    'upper-algorithm': 'SHA256:' + 'a' * 64,
    'upper-hex': 'sha256:' + 'A' * 64,
    'md5': 'md5:' + 'a' * 32,
    'too-long': 'sha256:' + 'a' * 65,
    'sha512-short': 'sha512:' + 'a' * 64,
    'non-hex': 'sha256:' + 'g' * 64,
    'no-algorithm': ':' + 'a' * 64,
    'no-colon': 'sha256' + 'a' * 64,
    'nul': 'sha256:' + 'a' * 63 + '\x00',
    'newline': 'sha256:' + 'a' * 64 + '\n',
    'traversal': 'sha256:../../oci-ref.db',
    'dotdot': 'sha256:..',
    'huge': 'sha256:' + 'a' * 5000,
    'unregistered-algorithm': 'sha256+b64u:' + 'a' * 64,
    'space': 'sha256: ' + 'a' * 63,
    'two-colons': 'sha256:sha256:' + 'a' * 64,
}
# Valid in a descriptor (image-spec descriptor.md: unregistered algorithms that match
# the grammar SHOULD pass validation), but content this registry cannot hash.
UNHASHABLE = {'md5', 'unregistered-algorithm'}


@pytest.mark.parametrize('name', sorted(BAD_DIGESTS))
def test_malformed_digest(env: Env, name: str) -> None:
    """In the path, in ?digest=, in descriptors: 400 (DIGEST_INVALID / NAME_INVALID /
    MANIFEST_INVALID) or 404, never a write; ?mount= falls back to a session (202),
    which is cancelled again."""
    bad = BAD_DIGESTS[name]
    url = quote(bad, safe=':+')
    for method in ('GET', 'DELETE'):
        env.envelope(env.req(method, f'/v2/{REPO}/blobs/{url}'), (400, 404))
        env.envelope(env.req(method, f'/v2/{REPO}/manifests/{url}'), (400, 404))
    for path in (f'/v2/{REPO}/blobs/{url}', f'/v2/{REPO}/manifests/{url}'):
        assert env.req('HEAD', path).status in (400, 404)
    env.envelope(env.req('GET', f'/v2/{REPO}/referrers/{url}'), (400, 404))
    e = env.envelope(env.req('POST', f'/v2/{REPO}/blobs/uploads/?digest={url}', {}, NEW),
                 (400, 404))
    assert e['code'] in ('DIGEST_INVALID', 'BLOB_UNKNOWN'), e
    e = env.envelope(env.req('PUT', f'{env.location}?digest={url}',
                         {'Content-Range': '5-9'}, b'fghij'), (400, 404))
    assert e['code'] in ('DIGEST_INVALID', 'BLOB_UPLOAD_UNKNOWN'), e
    if ':' in bad:  # without a colon it is a (valid) tag, and the PUT would store
        env.envelope(env.req('PUT', f'/v2/{REPO}/manifests/{url}',
                         {'Content-Type': OCI_MANIFEST}, valid_manifest()), (400, 404))
    descriptor = {'mediaType': OCI_LAYER, 'digest': bad, 'size': 1}
    config = json.loads(valid_manifest())['config']
    cases = [
        (valid_manifest().replace(digest(CONFIG).encode(), json.dumps(bad).encode()[1:-1]),
         OCI_MANIFEST),
        (json.dumps({'schemaVersion': 2, 'mediaType': OCI_MANIFEST, 'config': config,
                     'layers': [descriptor]}).encode(), OCI_MANIFEST),
        (json.dumps({'schemaVersion': 2, 'mediaType': OCI_INDEX,
                     'manifests': [{**descriptor, 'mediaType': OCI_MANIFEST}]}).encode(),
         OCI_INDEX),
    ]
    if name not in UNHASHABLE:  # such a subject is valid, unchecked: it would store
        cases.append((valid_manifest(subject={**descriptor, 'mediaType': OCI_MANIFEST}),
                      OCI_MANIFEST))
    for body, ctype in cases:
        r = env.req('PUT', f'/v2/{REPO}/manifests/bad-descriptor',
                    {'Content-Type': ctype}, body)
        env.envelope(r, (400,), 'MANIFEST_BLOB_UNKNOWN' if name in UNHASHABLE
                     else 'MANIFEST_INVALID')
    for query in (f'mount={url}&from={REPO}', f'mount={url}'):
        r = env.req('POST', f'/v2/{REPO}/blobs/uploads/?{query}')
        assert r.status == 202, (query, r.status, r.body[:200])
        location = r.header('location') or ''
        assert location.startswith(f'/v2/{REPO}/blobs/uploads/'), location
        assert env.req('DELETE', location).status == 204
    assert session_range(env) == '0-4'


@pytest.mark.parametrize('source', ['..', '%2e%2e', '../bad/base', 'A/B', 'bad/base/..',
                                    '%2Fbad%2Fbase', 'a' * 300, ''])
def test_mount_from_bad_repository(env: Env, source: str) -> None:
    """?mount=<digest>&from=<not a repository name>: the spec's fallback (202 and a
    session), never a link; the session is cancelled again."""
    r = env.req('POST', f'/v2/bad/elsewhere/blobs/uploads/?mount={digest(HELLO)}'
                        f'&from={source}')
    assert r.status == 202, (r.status, r.body[:200])
    location = r.header('location') or ''
    assert location.startswith('/v2/bad/elsewhere/blobs/uploads/'), location
    assert env.req('DELETE', location).status == 204


def test_digest_algorithm_parameter(env: Env) -> None:
    for value in ('md5', 'SHA256', '..%2F..%2Foci-ref.db', 'sha256%00', 'a' * 5000):
        r = env.req('POST', f'/v2/{REPO}/blobs/uploads/?digest-algorithm={value}')
        env.envelope(r, (400,), 'DIGEST_INVALID')


def test_digest_mismatch_writes_nothing(env: Env) -> None:
    """Content that does not hash to the digest: 400, no blob, no temporary spool,
    and a session keeps only what it had."""
    wrong = digest(HELLO + b'!')
    env.envelope(env.req('POST', f'/v2/{REPO}/blobs/uploads/?digest={wrong}', {}, NEW),
             (400,), 'DIGEST_INVALID')
    env.envelope(env.req('POST', f'/v2/{REPO}/blobs/uploads/?digest={wrong}'
                             f'&digest={digest(NEW)}', {}, NEW), (400,), 'DIGEST_INVALID')
    env.envelope(env.req('PUT', f'{env.location}?digest={wrong}', {'Content-Range': '5-9'},
                     b'fghij'), (400,), 'DIGEST_INVALID')
    body = valid_manifest()
    env.envelope(env.req('PUT', f'/v2/{REPO}/manifests/{digest(body + b" ")}',
                     {'Content-Type': OCI_MANIFEST}, body), (400,), 'DIGEST_INVALID')
    assert session_range(env) == '0-4'


def test_page_size_and_long_urls(env: Env) -> None:
    """?n= with 5000 digits: 400; a 100 KB request line is refused by the HTTP
    parser (4xx), before the app."""
    env.envelope(env.req('GET', f'/v2/{REPO}/tags/list?n={BIG}'), (400,))
    env.envelope(env.req('GET', f'/v2/_catalog?n={BIG}'), (400,))
    r = env.req('POST', f'/v2/{REPO}/blobs/uploads/?digest={digest(NEW)}&x='
                        + 'a' * 100_000, {}, NEW)
    assert 400 <= r.status < 500, r.status


def test_zz_nothing_written_at_all(env: Env) -> None:
    """After every test above: no manifest, no tag, only the baseline's blobs and
    repository, only the deliberately open session, and fsck clean."""
    state = db_state(env.srv.root)
    assert state.manifests == {} and state.tags == {}
    assert state.repositories == {REPO}
    assert set(state.blobs) == {digest(HELLO), digest(CONFIG), digest(LAYER)}
    assert set(blob_files(env.srv.root)) == set(state.blobs)
    assert state.uploads == {env.session: (REPO, 5)}
    assert spools(env.srv.root) == {env.session}
    assert not blob_file_problems(env.srv.root)
    assert not integrity_problems(env.srv.root, state)
    assert env.srv.proc.poll() is None
    assert_fsck_clean(env.srv.root)
