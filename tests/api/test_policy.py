"""Deployment switches: deletes, read-only, upload-session cap and idle TTL."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from oci_ref.app import create_app
from oci_ref.config import Config
from tests.support import InProcess, assert_error, digest, push_blob, push_image


def app(tmp_path: Path, **settings: object) -> InProcess:
    return InProcess(create_app(Config(root=tmp_path / 'data', **settings)))


def test_disabled_manifest_delete_is_405_unsupported_and_deletes_nothing(tmp_path):
    c = app(tmp_path, delete_manifests=False)
    d, body = push_image(c, 'a/b', 'v1')
    assert_error(c.delete(f'/v2/a/b/manifests/{d}'), 405, 'UNSUPPORTED')
    assert c.get(f'/v2/a/b/manifests/{d}').content == body
    # Tags are a separate switch: still deletable.
    assert c.delete('/v2/a/b/manifests/v1').status_code == 202


def test_disabled_tag_delete_is_405_but_delete_by_digest_removes_the_tag(tmp_path):
    """Legacy suite: when tag deletes are off, a delete by digest clears its tags."""
    c = app(tmp_path, delete_tags=False)
    d, _ = push_image(c, 'a/b', 'v1')
    assert_error(c.delete('/v2/a/b/manifests/v1'), 405, 'UNSUPPORTED')
    assert c.get('/v2/a/b/tags/list').json()['tags'] == ['v1']
    assert c.delete(f'/v2/a/b/manifests/{d}').status_code == 202
    assert c.get('/v2/a/b/tags/list').json()['tags'] == []


def test_disabled_blob_delete_is_405_unsupported(tmp_path):
    c = app(tmp_path, delete_blobs=False)
    d = push_blob(c, 'a/b', b'keep me')
    error = assert_error(c.delete(f'/v2/a/b/blobs/{d}'), 405, 'UNSUPPORTED')
    assert 'disabled' in error['message']
    assert c.get(f'/v2/a/b/blobs/{d}').content == b'keep me'


def test_read_only_refuses_every_write_and_serves_reads(tmp_path):
    root = tmp_path / 'data'
    writer = InProcess(create_app(Config(root=root)))
    d, body = push_image(writer, 'a/b', 'v1')
    session = writer.post('/v2/a/b/blobs/uploads/').headers['location']
    c = InProcess(create_app(Config(root=root, read_only=True)))
    assert c.get(f'/v2/a/b/manifests/{d}').content == body
    assert c.get('/v2/a/b/tags/list').status_code == 200
    writes = [
        ('POST', '/v2/a/b/blobs/uploads/', b''),
        ('POST', f'/v2/a/b/blobs/uploads/?digest={digest(b"x")}', b'x'),
        ('POST', f'/v2/x/y/blobs/uploads/?mount={d}&from=a/b', b''),
        ('PATCH', session, b'data'),
        ('PUT', f'{session}?digest={digest(b"")}', b''),
        ('DELETE', session, b''),
        ('PUT', '/v2/a/b/manifests/v2', body),
        ('DELETE', f'/v2/a/b/manifests/{d}', b''),
        ('DELETE', '/v2/a/b/manifests/v1', b''),
        ('DELETE', f'/v2/a/b/blobs/{d}', b''),
    ]
    for method, url, content in writes:
        error = assert_error(c.request(method, url, content=content), 405, 'UNSUPPORTED')
        assert 'read-only' in error['message'], (method, url)
    assert c.get('/v2/a/b/tags/list').json()['tags'] == ['v1']
    assert writer.get(session).status_code == 204  # the session was not touched


def test_session_cap_is_429_toomanyrequests_with_retry_after(tmp_path):
    c = app(tmp_path, max_upload_sessions=2)
    first = c.post('/v2/a/b/blobs/uploads/').headers['location']
    assert c.post('/v2/a/b/blobs/uploads/').status_code == 202
    r = c.post('/v2/a/b/blobs/uploads/')
    assert_error(r, 429, 'TOOMANYREQUESTS')
    assert int(r.headers['retry-after']) > 0
    # Finishing a session frees a place; single-request pushes never need one.
    assert c.put(f'{first}?digest={digest(b"")}').status_code == 201
    assert c.post('/v2/a/b/blobs/uploads/').status_code == 202
    # A single-request push (POST ?digest=) opens no session: it works at the cap.
    r = c.post(f'/v2/a/b/blobs/uploads/?digest={digest(b"m")}', content=b'm')
    assert r.status_code == 201


def test_idle_session_expires_after_its_ttl(backend):
    registry = backend.registry(clock=True, upload_ttl=60)
    c = InProcess(create_app(backend.config(upload_ttl=60), registry=registry))
    loc = c.post('/v2/a/b/blobs/uploads/').headers['location']
    assert c.patch(loc, content=b'abc').status_code == 202
    spool = backend.spool_path(loc.rsplit('/', 1)[1])
    assert spool.is_file()
    backend.clock.advance(59)
    assert c.get(loc).status_code == 204
    backend.clock.advance(2)
    assert_error(c.get(loc), 404, 'BLOB_UPLOAD_UNKNOWN')
    assert not spool.exists()
    registry.close()


def test_an_idle_session_expires_after_the_ttl_but_an_active_one_lives_on(backend):
    registry = backend.registry(clock=True, upload_ttl=60)
    c = InProcess(create_app(backend.config(upload_ttl=60), registry=registry))
    idle = c.post('/v2/ttl/app/blobs/uploads/').headers['location']
    active = c.post('/v2/ttl/app/blobs/uploads/').headers['location']
    data = b''
    for _ in range(4):  # 4 x 40 s: the active session outlives the TTL twice over
        backend.clock.advance(40)
        chunk = os.urandom(100)
        r = c.patch(active, content=chunk,
                    headers={'Content-Range': f'{len(data)}-{len(data) + 99}'})
        assert r.status_code == 202, r.content
        data += chunk
        active = r.headers['location']
    assert_error(c.get(idle), 404, 'BLOB_UPLOAD_UNKNOWN')
    assert_error(c.patch(idle, content=b'late'), 404, 'BLOB_UPLOAD_UNKNOWN')
    r = c.put(f'{active}?digest={digest(data)}')
    assert r.status_code == 201, r.content
    assert c.get(f'/v2/ttl/app/blobs/{digest(data)}').content == data
    registry.close()


def test_purge_removes_expired_sessions_and_orphan_spools_only(backend):
    registry = backend.registry(clock=True, upload_ttl=60)

    async def scenario() -> None:
        stale = await registry.start_upload('a/b')
        backend.clock.advance(40)
        live = await registry.start_upload('a/b')
        orphan = backend.spool_path('tmp-orphan')
        orphan.write_bytes(b'left by a crash')
        fresh_orphan = backend.spool_path('tmp-in-flight')
        fresh_orphan.write_bytes(b'a push still streaming')
        backend.touch_spool('tmp-orphan', time.time() - 2 * 3600)
        backend.clock.advance(30)
        assert await registry.purge_uploads() == 2
        assert await registry.meta.get_upload(stale.id) is None
        assert not backend.spool_path(stale.id).exists()
        assert not orphan.exists()
        assert await registry.meta.get_upload(live.id) is not None
        assert backend.spool_path(live.id).exists()
        assert fresh_orphan.exists()

    asyncio.run(scenario())
    registry.close()
