"""Locks through the metadata store, and uploads against time (issue 12 §4, issue 14).

Every test runs on each store combination (``backend``) with an injected clock: time
moves when the test says so, nothing sleeps. Two store instances on one root stand
for two worker processes.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from oci_ref.errors import RegistryError
from oci_ref.reference import Digest
from oci_ref.registry import GC_LOCK, Registry
from oci_ref.storage.interfaces import SessionBusy, StoreUnavailable
from tests.backends import Backend

TTL = 60


async def body(*parts: bytes, between: object = None) -> AsyncIterator[bytes]:
    for i, part in enumerate(parts):
        if i and between is not None:
            await between()  # type: ignore[operator]
        yield part


def test_a_patch_longer_than_the_upload_ttl_still_succeeds(backend: Backend):
    """While a PATCH streams, the clock passes the TTL several times and the purge
    runs (here, and from "another worker"): the session survives, the PATCH gets
    its 202 for a session that exists, and the upload completes."""
    registry = backend.registry(clock=True, upload_ttl=TTL)
    other = backend.registry(clock=True, upload_ttl=TTL)  # another worker

    async def scenario() -> None:
        upload = await registry.start_upload('a/b')

        async def meanwhile() -> None:
            backend.clock.advance(3 * TTL)
            assert await registry.purge_uploads() == 0
            assert await other.purge_uploads() == 0
            assert backend.spool_path(upload.id).is_file()

        parts = [b'first part ' * 1000, b'second part ' * 1000, b'third' * 1000]
        done = await registry.append_chunk(
            'a/b', upload.id, body(*parts, between=meanwhile), None, None)
        data = b''.join(parts)
        assert done.size == len(data)
        # The session is alive and idle since the PATCH ended, not since it began.
        assert (await other.get_upload('a/b', upload.id)).size == len(data)
        d = await other.finish_upload('a/b', upload.id, [str(Digest.of(data))],
                                      body(), None, None)
        assert await registry.meta.blob_size('a/b', str(d)) == len(data)

    asyncio.run(scenario())
    other.close()
    registry.close()


def test_an_idle_session_expires_and_a_late_patch_is_refused(backend: Backend):
    registry = backend.registry(clock=True, upload_ttl=TTL)

    async def scenario() -> None:
        upload = await registry.start_upload('a/b')
        await registry.append_chunk('a/b', upload.id, body(b'abc'), None, None)
        backend.clock.advance(TTL + 1)
        with pytest.raises(RegistryError) as caught:
            await registry.append_chunk('a/b', upload.id, body(b'late'), None, None)
        assert caught.value.code.name == 'BLOB_UPLOAD_UNKNOWN'
        assert not backend.spool_path(upload.id).exists()
        assert await registry.meta.get_upload(upload.id) is None

    asyncio.run(scenario())
    registry.close()


def test_a_claimed_session_is_busy_for_others_and_never_expired(backend: Backend):
    registry = backend.registry(clock=True, upload_ttl=TTL)
    other = backend.registry(clock=True, upload_ttl=TTL)

    async def scenario() -> None:
        upload = await registry.start_upload('a/b')
        async with registry.meta.claim_upload(upload.id) as claim:
            assert claim.upload is not None and claim.upload.id == upload.id
            with pytest.raises(SessionBusy):
                async with other.meta.claim_upload(upload.id):
                    pass
            backend.clock.advance(10 * TTL)
            assert await other.meta.expire_uploads(backend.clock() - TTL) == []
            # end-14 on another worker while a PATCH holds it: 416, not pulled away.
            with pytest.raises(RegistryError) as caught:
                await other.cancel_upload('a/b', upload.id)
            assert caught.value.status == 416
        # Released: the claim reset the idle clock, so it is not expired yet ...
        assert await other.meta.expire_uploads(backend.clock() - TTL) == []
        backend.clock.advance(TTL + 1)
        # ... but it is once idle for longer than the TTL.
        assert await other.meta.expire_uploads(backend.clock() - TTL) == [upload.id]

    asyncio.run(scenario())
    other.close()
    registry.close()


def test_gc_lock_shared_by_commits_exclusive_for_a_sweep(backend: Backend):
    one, two = backend.registry(), backend.registry()

    async def scenario() -> None:
        async with one.meta.lock(GC_LOCK, exclusive=False, wait=False) as a:
            assert a
            async with two.meta.lock(GC_LOCK, exclusive=False, wait=False) as b:
                assert b  # commits run side by side
            async with two.meta.lock(GC_LOCK, exclusive=True, wait=False) as sweep:
                assert not sweep
        async with two.meta.lock(GC_LOCK, exclusive=True, wait=False) as sweep:
            assert sweep
            async with one.meta.lock(GC_LOCK, exclusive=False, wait=False) as a:
                assert not a

    asyncio.run(scenario())
    one.close()
    two.close()


def test_a_lock_whose_holder_died_is_taken_over_at_once(backend: Backend):
    """A worker killed while holding a claim does not wedge the session."""
    registry = backend.registry()

    async def scenario() -> None:
        upload = await registry.start_upload('a/b')
        backend.plant_dead_lock(f'upload:{upload.id}')
        async with registry.meta.claim_upload(upload.id) as claim:
            assert claim.upload is not None

    asyncio.run(scenario())
    registry.close()


def test_every_store_call_runs_off_the_event_loop(backend: Backend):
    """The event-loop rule: a request's store calls never block the loop. A ticker
    on the loop keeps ticking while the metadata store waits for a lock held from
    outside, and the waiting call ends in StoreUnavailable, naming the store."""
    registry: Registry = backend.registry(busy_timeout_ms=500)

    async def scenario() -> None:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.get_running_loop().create_task(ticker())
        with backend.write_lock_held(), pytest.raises(StoreUnavailable) as caught:
            await registry.start_upload('a/b')
        task.cancel()
        assert caught.value.store == registry.meta.name
        assert ticks >= 10, ticks  # the loop ran all along (0.5 s of 10 ms ticks)
        assert [s.id for s in await registry.blobs.spools()] == []

    asyncio.run(scenario())
    registry.close()


def test_every_lock_is_gone_after_pushes_mounts_and_failures(backend: Backend):
    """Leases dropped by the write that ends them, or on the way out: none is left
    after chunked and single-request pushes, a mount, a bad digest and a cancel."""
    registry = backend.registry()

    async def scenario() -> None:
        data = b'locked bytes' * 100
        d = str(Digest.of(data))
        upload = await registry.start_upload('a/b')
        await registry.append_chunk('a/b', upload.id, body(data[:100]), None, None)
        with pytest.raises(RegistryError):
            await registry.finish_upload('a/b', upload.id, [str(Digest.of(b'x'))],
                                         body(data[100:]), None, None)
        await registry.finish_upload('a/b', upload.id, [d], body(data[100:]), None,
                                     None)
        await registry.push_monolithic('c/d', [d], body(data))
        assert await registry.mount_blob('e/f', d, 'a/b') is not None
        cancelled = await registry.start_upload('a/b')
        await registry.cancel_upload('a/b', cancelled.id)

    asyncio.run(scenario())
    with backend.db() as db:
        assert db.execute('SELECT * FROM locks').fetchall() == []
    registry.close()


def test_a_reused_pid_is_not_the_lease_holder():
    """pid_max wraps on a busy machine (32768 here): a lease row whose PID now
    belongs to another process (another start time) has no live holder, so a
    restarted server resumes the session instead of answering 416 until the lease
    runs out. (SQLite store: leases name their holder by PID and start time.)"""
    from oci_ref.storage.sqlite_locks import alive as _alive
    from oci_ref.storage.sqlite_locks import my_start as _my_start

    me = os.getpid()
    assert _alive(me, f'proc-lease@{_my_start()}')
    assert not _alive(me, 'proc-lease@1')  # the same PID, started at another time
    assert _alive(me, 'proc-lease')  # no start time recorded: the PID decides


def test_a_zombie_is_not_the_lease_holder():
    """A killed worker whose master was killed too is reparented to PID 1; where
    PID 1 does not reap (a CI container), it stays a zombie with its PID and start
    time. It holds nothing: the restarted server must resume its sessions."""
    import subprocess
    import sys

    from oci_ref.storage.sqlite_locks import alive as _alive
    from oci_ref.storage.sqlite_locks import process_stat as _process_stat

    child = subprocess.Popen([sys.executable, '-c', 'pass'])
    try:
        # Wait for the exit without reaping it: the child stays a zombie.
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        state, start = _process_stat(child.pid)
        assert state == 'Z' and start
        assert not _alive(child.pid, f'proc-lease@{start}')
    finally:
        child.wait()
