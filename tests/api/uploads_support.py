"""Helpers shared by the upload tests (test_uploads.py: the upload flows;
test_upload_sessions.py: status, cancel, session identity, HTTP plumbing)."""

from __future__ import annotations

import random
import re
from typing import Any

from tests.support import assert_error

ALGORITHMS = ['sha256', 'sha512']
RANGE_RE = re.compile(r'0-\d+')


def blob(n: int, seed: int = 1) -> bytes:
    """Deterministic, non-periodic bytes (a periodic pattern would hide offset bugs)."""
    return random.Random(seed).randbytes(n)


def start(c: Any, name: str, query: str = '') -> str:
    """end-4a: open a session, return its Location."""
    r = c.post(f'/v2/{name}/blobs/uploads/{query}')
    assert r.status_code == 202, r.content
    return str(r.headers['location'])


def patch(c: Any, location: str, data: bytes, first: int | None = None) -> Any:
    """end-5: one chunk; with Content-Range when ``first`` is given, else streamed."""
    headers = {'Content-Type': 'application/octet-stream'}
    if first is not None:
        headers['Content-Range'] = f'{first}-{first + len(data) - 1}'
    return c.patch(location, content=data, headers=headers)


def put(c: Any, location: str, d: str | None, data: bytes = b'',
        headers: dict[str, str] | None = None) -> Any:
    """end-6: close a session (``d`` None: no digest parameter at all)."""
    sep = '&' if '?' in location else '?'
    url = location if d is None else f'{location}{sep}digest={d}'
    return c.put(url, content=data,
                 headers={'Content-Type': 'application/octet-stream', **(headers or {})})


def status(c: Any, location: str) -> Any:
    """end-13: upload status."""
    return c.get(location)


def assert_blob(c: Any, name: str, data: bytes, d: str) -> None:
    """The blob is pullable in ``name`` with exactly these bytes and headers."""
    r = c.get(f'/v2/{name}/blobs/{d}')
    assert r.status_code == 200, r.content[:300]
    assert r.content == data
    assert r.headers['docker-content-digest'] == d
    assert r.headers['content-length'] == str(len(data))


def assert_absent(c: Any, name: str, d: str) -> None:
    r = c.head(f'/v2/{name}/blobs/{d}')
    assert r.status_code == 404, (r.status_code, d)


def assert_created(r: Any, name: str, d: str) -> None:
    """§5: 201 with Location /v2/<name>/blobs/<d>, Docker-Content-Digest, no body."""
    assert r.status_code == 201, r.content[:300]
    assert r.headers['location'] == f'/v2/{name}/blobs/{d}'
    assert r.headers['docker-content-digest'] == d
    assert r.headers['content-length'] == '0'
    assert r.content == b''


def assert_session(r: Any, name: str, status_code: int, end: int | None) -> None:
    """§5: Location under /v2/<name>/blobs/uploads/, Range 0-<end> (no bytes=),
    Docker-Upload-UUID = the session id in the Location. ``end`` None: empty session."""
    assert r.status_code == status_code, r.content[:300]
    location = r.headers['location']
    assert location.startswith(f'/v2/{name}/blobs/uploads/'), location
    assert RANGE_RE.fullmatch(r.headers['range']), r.headers['range']
    if end is not None:
        assert r.headers['range'] == f'0-{end}'
    session_id = location.split('?')[0].rsplit('/', 1)[1]
    assert r.headers['docker-upload-uuid'] == session_id


def assert_range_error(r: Any, name: str, end: int | None) -> None:
    """§3.2: 416 BLOB_UPLOAD_INVALID with Location and Range so the client can resume."""
    assert_error(r, 416, 'BLOB_UPLOAD_INVALID')
    assert r.headers['location'].startswith(f'/v2/{name}/blobs/uploads/')
    assert RANGE_RE.fullmatch(r.headers['range']), r.headers['range']
    if end is not None:
        assert r.headers['range'] == f'0-{end}'
