"""What only the S3 blob store does: multipart uploads tracked in the metadata store,
small chunks combined in the bucket, resumable hashing across replicas, aborting the
multipart uploads of cancelled, expired and crashed sessions. (Everything the stores
share runs on S3 through the ``sqlite+s3`` entry of tests/backends.py.)"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from oci_ref.app import create_app
from oci_ref.reference import Digest
from oci_ref.registry import Registry
from oci_ref.storage.s3_spools import MIN_PART, PART_SIZE, SpoolState
from tests.s3_backend import S3Backend
from tests.support import InProcess, assert_error, digest

MiB = 1024 * 1024


@pytest.fixture
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> S3Backend:
    b = S3Backend.create(request, tmp_path / 'data')
    assert isinstance(b, S3Backend)
    return b


@pytest.fixture
def replicas(backend: S3Backend) -> Iterator[list[tuple[Registry, InProcess]]]:
    """Two registries on the same stores, no state shared in process (two replicas)."""
    made = []
    for _ in range(2):
        reg = backend.registry(clock=True)
        made.append((reg, InProcess(create_app(backend.config(), registry=reg))))
    yield made
    for reg, _ in made:
        reg.close()


def state(backend: S3Backend, session_id: str) -> SpoolState | None:
    with backend.db() as db:
        row = db.execute('SELECT state FROM blob_spools WHERE id = ?',
                         [session_id]).fetchone()
    return None if row is None else SpoolState.load(row[0])


def test_small_chunks_become_parts_on_alternating_replicas_and_verify_without_reread(
        backend, replicas):
    data = os.urandom(12 * MiB + 12345)
    chunk = MiB - 7  # far under S3's 5 MiB part minimum
    loc = replicas[0][1].post('/v2/a/b/blobs/uploads/').headers['location']
    session_id = loc.rsplit('/', 1)[1]
    for i, start in enumerate(range(0, len(data), chunk)):
        piece = data[start:start + chunk]
        c = replicas[i % 2][1]  # every PATCH on the other replica
        r = c.patch(loc, content=piece, headers={
            'Content-Range': f'{start}-{start + len(piece) - 1}',
            'Content-Type': 'application/octet-stream'})
        assert r.status_code == 202, r.content
        loc = r.headers['location']
    s = state(backend, session_id)
    assert s is not None and s.mpu is not None
    assert s.parts and all(size >= MIN_PART for _, size in s.parts)
    assert 0 < sum(n for _, n, _ in s.pending) == len(data) - s.in_parts < PART_SIZE
    assert backend.multipart_uploads() == [f'uploads/{session_id}/data']
    # The closing PUT on the replica that did not see the last chunk: its hasher
    # cache cannot help; the stored hash state does (parts are not readable).
    closer = replicas[0][1] if (i % 2) else replicas[1][1]
    r = closer.put(f'{loc}?digest={digest(data)}')
    assert r.status_code == 201, r.content
    got = replicas[0][1].get(f'/v2/a/b/blobs/{digest(data)}')
    assert got.status_code == 200 and got.content == data
    assert backend.multipart_uploads() == []
    assert backend.objects('uploads/') == []
    assert state(backend, session_id) is None


def test_a_small_blob_costs_no_multipart_upload(backend, replicas):
    c = replicas[0][1]
    r = c.post('/v2/a/b/blobs/uploads/')
    # Advertised, not enforced: this 12-byte chunk is combined in the bucket.
    assert r.headers['oci-chunk-min-length'] == str(MIN_PART)
    loc = r.headers['location']
    r = c.patch(loc, content=b'small config')
    assert r.status_code == 202
    assert backend.multipart_uploads() == []
    assert len(backend.objects('uploads/')) == 1  # one pending piece
    r = c.put(f"{r.headers['location']}?digest={digest(b'small config')}")
    assert r.status_code == 201
    assert backend.objects('uploads/') == []
    assert backend.blob_files() == [digest(b'small config')]


def test_a_bad_last_chunk_is_cut_back_and_the_session_goes_on(backend, replicas):
    c = replicas[0][1]
    first, last = os.urandom(9 * MiB), os.urandom(MiB)
    loc = c.post('/v2/a/b/blobs/uploads/').headers['location']
    loc = c.patch(loc, content=first).headers['location']
    assert state(backend, loc.rsplit('/', 1)[1]).parts  # one part sent already
    wrong = digest(b'something else')
    assert_error(c.put(f'{loc}?digest={wrong}', content=last), 400, 'DIGEST_INVALID')
    assert c.get(loc).headers['range'] == f'0-{len(first) - 1}'
    r = replicas[1][1].put(f'{loc}?digest={digest(first + last)}', content=last)
    assert r.status_code == 201, r.content
    assert replicas[1][1].get(f'/v2/a/b/blobs/{digest(first + last)}').content \
        == first + last


def test_cancel_and_expiry_abort_their_multipart_uploads(backend, replicas):
    reg, c = replicas[0]
    cancelled = c.post('/v2/a/b/blobs/uploads/').headers['location']
    idle = c.post('/v2/a/b/blobs/uploads/').headers['location']
    for loc in (cancelled, idle):
        assert c.patch(loc, content=os.urandom(9 * MiB)).status_code == 202
    assert len(backend.multipart_uploads()) == 2
    assert c.delete(cancelled).status_code == 204
    assert backend.multipart_uploads() == [f"uploads/{idle.rsplit('/', 1)[1]}/data"]
    backend.clock.advance(reg.policy.upload_ttl + 1)
    assert asyncio.run(reg.purge_uploads()) == 1
    assert backend.multipart_uploads() == []
    assert backend.objects('uploads/') == []


def test_the_purge_aborts_a_multipart_upload_a_crash_left_without_a_session(
        backend, replicas):
    reg, c = replicas[0]
    loc = c.post('/v2/a/b/blobs/uploads/').headers['location']
    assert c.patch(loc, content=os.urandom(9 * MiB)).status_code == 202
    session_id = loc.rsplit('/', 1)[1]
    with backend.db() as db:  # the session row went, the spool did not (a crash)
        db.execute('DELETE FROM uploads WHERE id = ?', [session_id])
    assert asyncio.run(reg.purge_uploads()) == 0  # young: maybe still in flight
    backend.clock.advance(reg.policy.upload_ttl + 1)
    assert asyncio.run(reg.purge_uploads()) == 1
    assert backend.multipart_uploads() == []
    assert backend.objects('uploads/') == []


def test_a_closing_put_retried_after_a_crash_between_complete_and_copy_finishes(
        backend, replicas):
    c = replicas[0][1]
    data = os.urandom(9 * MiB + 100)
    loc = c.post('/v2/a/b/blobs/uploads/').headers['location']
    loc = c.patch(loc, content=data).headers['location']
    session_id = loc.rsplit('/', 1)[1]
    s = state(backend, session_id)
    assert s is not None and s.mpu is not None and s.pending
    # What the dead attempt did: the last part and the completion, not the copy.
    s3, bucket, key = backend.s3(), backend.bucket.bucket, f'uploads/{session_id}/data'
    tail = b''.join(backend.s3().get_object(Bucket=bucket, Key=k)['Body'].read()[:n]
                    for k, n, _ in s.pending)
    last = s3.upload_part(Bucket=bucket, Key=key, UploadId=s.mpu,
                          PartNumber=len(s.parts) + 1, Body=tail)
    parts = [{'PartNumber': n, 'ETag': e} for n, (e, _) in enumerate(s.parts, 1)]
    parts.append({'PartNumber': len(parts) + 1, 'ETag': last['ETag']})
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=s.mpu,
                                 MultipartUpload={'Parts': parts})
    r = replicas[1][1].put(f'{loc}?digest={digest(data)}')
    assert r.status_code == 201, r.content
    assert c.get(f'/v2/a/b/blobs/{digest(data)}').content == data
    assert backend.objects('uploads/') == []


async def _pieces(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def test_a_readable_spool_grows_in_pieces_and_a_crashed_commit_is_aborted(
        backend, replicas):
    """The pull-through cache's spool: plain pieces while it grows (no multipart
    upload to read back), joined at commit by a multipart upload that is tracked
    in the state first, so the purge aborts it when a crash interrupts the commit."""
    reg = replicas[0][0]
    blobs = reg.blobs
    data = os.urandom(2 * MIN_PART + 4000)
    sizes = [4000, MIN_PART, MIN_PART]

    async def grow(spool: str) -> None:
        await blobs.create_spool(spool, readable=True)
        at = 0
        for n in sizes:
            await blobs.append(spool, at, _pieces([data[at:at + n]]), [])
            at += n

    asyncio.run(grow('tmp-cache-ok'))
    s = state(backend, 'tmp-cache-ok')
    assert s is not None and s.readable and s.mpu is None and not s.parts
    assert [n for _, n, _ in s.pending] == sizes
    assert backend.multipart_uploads() == []
    d = Digest.parse(digest(data))
    asyncio.run(blobs.commit('tmp-cache-ok', d))
    assert backend.multipart_uploads() == [] and backend.objects('uploads/') == []
    assert asyncio.run(blobs.hash(d)) == d.encoded

    # A commit that died after starting its multipart upload (what it records first).
    asyncio.run(grow('tmp-cache-dead'))
    s = state(backend, 'tmp-cache-dead')
    assert s is not None
    target = f'blobs/sha256/dead/{"0" * 64}'
    mpu = backend.s3().create_multipart_upload(Bucket=backend.bucket.bucket, Key=target)
    s.composing = [target, mpu['UploadId']]
    with backend.db() as db:
        db.execute('UPDATE blob_spools SET state = ? WHERE id = ?',
                   [s.dump(), 'tmp-cache-dead'])
    assert backend.multipart_uploads() == [target]
    backend.clock.advance(reg.policy.upload_ttl + 1)
    asyncio.run(reg.purge_uploads())
    assert backend.multipart_uploads() == []
    assert backend.objects('uploads/') == []
