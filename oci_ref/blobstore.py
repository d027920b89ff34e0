"""Content-addressed blob files and upload spools: the only module that touches them.

The tree under ``--root``::

    <root>/
      oci-ref.db            metadata (see metadata.py): repositories, repo<->blob links,
      oci-ref.db-wal/-shm   manifests, tags, referrers, upload sessions (SQLite, WAL)
      blobs/
        sha256/ab/ab12…ef   verified content, named by its digest; written once,
        sha512/0f/0f3c…9a   never modified, shared by every repository that links it
      uploads/
        <session_id>        the spool of an open upload session (a UUID); bytes
                            0..size-1 are the accepted chunks, ``size`` lives in SQLite
        tmp-<uuid>          the spool of a single-request push (POST ?digest=)

A blob reaches ``blobs/`` only by :meth:`BlobStore.commit`: the spool is hashed (or was
hashed while streaming), compared with the digest, flushed to disk and renamed into
place with ``os.replace`` (atomic on one filesystem). Readers therefore never see a
partial or unverified file, and a crash leaves at most a stale spool behind.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from oci_ref.reference import ALGORITHMS, Digest

if TYPE_CHECKING:
    from hashlib import _Hash

T = TypeVar('T')

# Large reads and writes: the per-call overhead, not the disk, dominates below ~1 MiB.
READ_CHUNK = 1024 * 1024
WRITE_BATCH = 1024 * 1024
INLINE_MAX = 64 * 1024
WRITE_BATCH_CHUNKS = 512


class SpoolBusy(Exception):
    """Another request is writing to this upload session right now."""


class SpoolMissing(Exception):
    """The session's spool is gone (cancelled, finished, or lost in a crash)."""


class BodyTooLarge(Exception):
    """The streamed body exceeded the caller's limit."""


class BlobStore:
    def __init__(self, root: Path, *, fsync: bool = True):
        self.root = root
        self.blobs = root / 'blobs'
        self.uploads = root / 'uploads'
        self.fsync = fsync
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.uploads.mkdir(parents=True, exist_ok=True)

    # -- content-addressed blobs -------------------------------------------------

    def path(self, digest: Digest) -> Path:
        return self.blobs / digest.algorithm / digest.encoded[:2] / digest.encoded

    def exists(self, digest: Digest) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: Digest) -> int | None:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            return None

    async def commit_async(self, spool: Path, digest: Digest) -> None:
        """:meth:`commit` in a thread: its fsyncs must not stall the event loop."""
        await _in_thread(self.commit, spool, digest)

    async def hash_file_async(self, path: Path, algorithm: str) -> str:
        return await _in_thread(self.hash_file, path, algorithm)

    def commit(self, spool: Path, digest: Digest) -> None:
        """Move a verified spool into place; drop it if the content is already there."""
        target = self.path(digest)
        if target.is_file():
            spool.unlink(missing_ok=True)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        if self.fsync:
            fd = os.open(spool, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(spool, target)
        if self.fsync:
            _fsync_dir(target.parent)

    def reader(self, digest: Digest, start: int = 0, length: int | None = None
               ) -> AsyncIterator[bytes]:
        """Open the blob now (so a missing file fails before any header is sent) and
        return an iterator of ``length`` bytes from ``start``, in large chunks."""
        f = open(self.path(digest), 'rb', buffering=0)  # noqa: SIM115 (closed below)
        f.seek(start)

        async def chunks() -> AsyncIterator[bytes]:
            remaining = length
            try:
                while remaining is None or remaining > 0:
                    want = READ_CHUNK if remaining is None else min(READ_CHUNK, remaining)
                    chunk = f.read(want)
                    if not chunk:
                        break
                    if remaining is not None:
                        remaining -= len(chunk)
                    yield chunk
            finally:
                f.close()

        return chunks()

    def open(self, digest: Digest) -> Iterator[bytes]:
        """Synchronous chunked reader (for fsck-style tools and tests)."""
        with open(self.path(digest), 'rb', buffering=0) as f:
            while chunk := f.read(READ_CHUNK):
                yield chunk

    def delete(self, digest: Digest) -> None:
        self.path(digest).unlink(missing_ok=True)

    def walk(self) -> Iterator[tuple[Path, str]]:
        """Every content file, as (path, digest); anything else is skipped."""
        for algorithm, length in ALGORITHMS.items():
            top = self.blobs / algorithm
            if not top.is_dir():
                continue
            for prefix in sorted(top.iterdir()):
                for path in sorted(prefix.iterdir()):
                    name = path.name
                    if len(name) == length and name.startswith(prefix.name):
                        yield path, f'{algorithm}:{name}'

    @contextmanager
    def gc_lock(self, *, exclusive: bool, wait: bool) -> Iterator[bool]:
        """The GC lock (``<root>/gc.lock``, flock across processes): shared while a
        blob is committed and linked, exclusive while GC sweeps. Yields whether it
        was taken (always, with ``wait``)."""
        fd = os.open(self.root / 'gc.lock', os.O_RDWR | os.O_CREAT, 0o644)
        try:
            mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            try:
                fcntl.flock(fd, mode | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    # -- upload spools -----------------------------------------------------------

    def spool_path(self, session_id: str) -> Path:
        return self.uploads / session_id

    def create_spool(self, session_id: str) -> None:
        self.spool_path(session_id).touch()

    def temp_spool(self) -> Path:
        return self.uploads / f'tmp-{uuid.uuid4()}'

    def discard_spool(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    @contextmanager
    def locked_spool(self, path: Path, *, create: bool = True) -> Iterator[int]:
        """Open a spool for writing under an exclusive, non-blocking ``flock``.

        The lock spans worker processes and dies with its holder, so a crashed
        writer never wedges a session; a second concurrent writer gets SpoolBusy.
        """
        try:
            fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
        except FileNotFoundError:
            raise SpoolMissing(path.name) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as ex:
                if ex.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise SpoolBusy(str(path.name)) from None
                raise
            yield fd
        finally:
            os.close(fd)

    async def append(
        self,
        fd: int,
        offset: int,
        body: AsyncIterator[bytes],
        hashers: list[_Hash],
        *,
        limit: int | None = None,
    ) -> int:
        """Write ``body`` at ``offset`` of an open spool, updating ``hashers``.

        Chunks are gathered into ~1 MiB batches that a worker thread writes and
        hashes: ``os.write`` and ``hashlib`` release the GIL, so concurrent uploads
        use every core while the event loop keeps receiving. Returns the number of
        bytes written. On any failure the spool is cut back to ``offset``: a broken
        chunk leaves the session exactly as it was.
        """
        os.ftruncate(fd, offset)
        os.lseek(fd, offset, os.SEEK_SET)
        written = 0
        batch: list[bytes] = []
        batched = 0
        try:
            async for chunk in body:
                if not chunk:
                    continue
                written += len(chunk)
                if limit is not None and written > limit:
                    raise BodyTooLarge(limit)
                batch.append(chunk)
                batched += len(chunk)
                # writev takes at most IOV_MAX (1024) buffers: tiny chunks flush early.
                if batched >= WRITE_BATCH or len(batch) >= WRITE_BATCH_CHUNKS:
                    await _in_thread(_write_and_hash, fd, batch, hashers)
                    batch, batched = [], 0
            if batched >= INLINE_MAX:
                await _in_thread(_write_and_hash, fd, batch, hashers)
            elif batch:
                _write_and_hash(fd, batch, hashers)  # small: a thread hop costs more
        except BaseException:
            os.ftruncate(fd, offset)
            raise
        return written

    def truncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def hash_file(self, path: Path, algorithm: str) -> str:
        """Hash a whole spool: the fallback when no streaming hasher covers it."""
        h = Digest(algorithm, '').hasher()
        with open(path, 'rb', buffering=0) as f:
            while chunk := f.read(READ_CHUNK):
                h.update(chunk)
        return h.hexdigest()

    def spools(self) -> Iterator[Path]:
        return self.uploads.iterdir()


def _write_and_hash(fd: int, chunks: list[bytes], hashers: list[_Hash]) -> None:
    """One writev for the batch (no join, no copy), then the hashes, chunk by chunk;
    both release the GIL. A short write (disk full, signal) is finished by hand."""
    total = sum(map(len, chunks))
    done = os.writev(fd, chunks)
    if done < total:
        rest = memoryview(b''.join(chunks))[done:]
        while rest:
            rest = rest[os.write(fd, rest):]
    for chunk in chunks:
        for h in hashers:
            h.update(chunk)


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn`` in the default executor and always wait for it to finish: if the
    request is cancelled meanwhile, the caller must not cut the spool back while
    the thread is still writing to it."""
    future = asyncio.get_running_loop().run_in_executor(None, fn, *args)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
