"""The embedded blob store: content-addressed files and upload spools on a local disk.

The tree under ``--root`` (the metadata file beside it is drawn in ``sqlite.py``)::

    <root>/
      blobs/
        sha256/ab/ab12…ef   verified content, named by its digest; written once,
        sha512/0f/0f3c…9a   never modified, shared by every repository that links it
      uploads/
        <session_id>        the spool of an open upload session (a UUID); bytes
                            0..size-1 are the accepted chunks, ``size`` lives in the
                            metadata store
        tmp-<uuid>          the spool of a single-request push (POST ?digest=)
      quarantine/           corrupt content moved aside by ``fsck --repair``

A blob reaches ``blobs/`` only by :meth:`FilesystemBlobStore.commit`: the spool was
hashed and compared with the digest by the caller, is flushed to disk and renamed
into place with ``os.replace`` (atomic on one filesystem), and the directory is
flushed. Readers never see a partial or unverified file; a crash leaves at most a
stale spool behind, which the purge removes.

The event-loop rule: every method that touches the disk (open, read, write, fsync,
ftruncate, hashing, directory scans) runs in this store's bounded thread pool; the
coroutines only hand work to it. Disk errors other than a missing file become
:class:`StoreUnavailable` naming this store (503), never a 500.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from oci_ref.reference import ALGORITHMS, Digest
from oci_ref.storage.bodies import batches
from oci_ref.storage.interfaces import (
    BlobInfo,
    BlobMissing,
    BodyTooLarge,
    SessionMissing,
    SpoolInfo,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from hashlib import _Hash

T = TypeVar('T')

# Large reads and writes: the per-call overhead, not the disk, dominates below ~1 MiB.
READ_CHUNK = 1024 * 1024
WRITE_BATCH = 1024 * 1024
# writev takes at most IOV_MAX (1024) buffers: tiny chunks flush early.
WRITE_BATCH_CHUNKS = 512
# Below this, a batch's writeback is left to the fsync before commit.
START_WRITEBACK = 256 * 1024
POOL_SIZE = 16
SCAN_BATCH = 1000


class FilesystemBlobStore:
    """Blobs and spools under one directory; see the module docstring for the tree.

    Thread-safe: each call opens what it needs. ``fsync=False`` trades crash safety
    for speed (tests, throwaway CI registries).
    """

    name = 'blobs (filesystem)'
    chunk_min_length = 0

    def __init__(self, root: Path, *, fsync: bool = True, pool_size: int = POOL_SIZE):
        self.root = root
        self._blobs = root / 'blobs'
        self._uploads = root / 'uploads'
        self.fsync = fsync
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._uploads.mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(pool_size, thread_name_prefix='oci-ref-fs')

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` in the pool and always wait for it to finish: if the request
        is cancelled meanwhile, the caller must not cut a spool back while a
        thread is still writing to it."""
        future = asyncio.get_running_loop().run_in_executor(
            self._pool, self._guarded, fn, *args)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            await asyncio.wait([future])
            raise

    def _guarded(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except (FileNotFoundError, BlobMissing, SessionMissing, BodyTooLarge):
            raise
        except OSError as ex:
            raise StoreUnavailable(self.name, ex.strerror or str(ex)) from ex

    def _path(self, digest: Digest) -> Path:
        return self._blobs / digest.algorithm / digest.encoded[:2] / digest.encoded

    def _spool(self, session_id: str) -> Path:
        if '/' in session_id or session_id.startswith('.'):
            raise SessionMissing(session_id)  # ids are ours; never a path
        return self._uploads / session_id

    # -- content -------------------------------------------------------------------

    async def exists(self, digest: Digest) -> bool:
        return await self._run(self._path(digest).is_file)

    async def reader(self, digest: Digest, start: int = 0, length: int | None = None
                     ) -> AsyncIterator[bytes]:
        return await self._file_chunks(self._path(digest), start, length,
                                       lambda: BlobMissing(str(digest)))

    async def delete(self, digest: Digest) -> None:
        await self._run(self._path(digest).unlink, True)

    async def scan(self) -> AsyncIterator[BlobInfo]:
        tops = [(a, n) for a, n in ALGORITHMS.items()]
        for algorithm, length in tops:
            top = self._blobs / algorithm
            prefixes = await self._run(_listdir, top)
            for prefix in prefixes:
                batch = await self._run(_scan_prefix, top / prefix, algorithm, length)
                for info in batch:
                    yield info

    async def hash(self, digest: Digest) -> str:
        return await self._run(_hash_file, self._path(digest), digest.algorithm)

    async def quarantine(self, digest: Digest) -> None:
        def move() -> None:
            target = self.root / 'quarantine' / digest.algorithm / digest.encoded
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(self._path(digest)), target)

        await self._run(move)

    async def quarantine_manifest(self, repo: str, digest: str, content: bytes) -> None:
        def write() -> None:
            qdir = self.root / 'quarantine' / 'manifests'
            qdir.mkdir(parents=True, exist_ok=True)
            (qdir / f'{repo.replace("/", "_")}@{digest}').write_bytes(content)

        await self._run(write)

    # -- upload spools ---------------------------------------------------------------

    async def create_spool(self, session_id: str, *, readable: bool = False) -> None:
        # A file is always readable while it grows.
        await self._run(self._spool(session_id).touch)

    async def spool_size(self, session_id: str) -> int | None:
        def size() -> int | None:
            try:
                return self._spool(session_id).stat().st_size
            except (FileNotFoundError, SessionMissing):
                return None

        return await self._run(size)

    async def append(self, session_id: str, offset: int, body: AsyncIterator[bytes],
                     hashers: list[_Hash], *, limit: int | None = None) -> int:
        """Chunks are gathered into ~1 MiB batches; a pool thread writes and hashes
        each batch while the event loop receives the next one (``os.write`` and
        ``hashlib`` release the GIL). One batch is in flight at a time, so the spool
        and the hashes see the batches in order. Before, the loop waited for each
        batch before it read on. (Writing and hashing a batch in two threads side by
        side measured slower with 8 concurrent pushes: more hand-offs, and the
        pushes already use both cores.)

        The spool is opened (and cut back to ``offset``) in the thread that writes
        the first batch, and closed by the one that writes the last: a small chunk
        costs one hop, not three.
        """
        path = self._spool(session_id)
        fd: int | None = None
        at = offset  # where the next batch goes

        def write(batch: list[bytes], last: bool) -> None:
            nonlocal fd, at
            if fd is None:
                fd = _open_at(path, session_id, offset)
            size = _write_all(fd, batch)
            if self.fsync and size >= START_WRITEBACK:
                # Start writing this batch to disk now, so the fsync before commit
                # has little left to wait for: the disk works while the rest of the
                # body arrives (what PostgreSQL's pg_flush_data does).
                _start_writeback(fd, at, size)
            at += size
            for chunk in batch:
                for h in hashers:
                    h.update(chunk)
            if last:
                os.close(fd)
                fd = None

        in_flight: asyncio.Task[None] | None = None

        def stage(batch: list[bytes], last: bool) -> asyncio.Task[None]:
            return asyncio.ensure_future(self._run(write, batch, last))

        written = 0
        try:
            async for batch, last in batches(body, size=WRITE_BATCH,
                                             chunks=WRITE_BATCH_CHUNKS, limit=limit):
                written += sum(map(len, batch))
                if in_flight is not None:
                    await in_flight
                in_flight = stage(batch, last)
            assert in_flight is not None  # the last batch is always staged
            await in_flight
        except BaseException:
            if in_flight is not None:
                # Its write ends before the spool is cut back (never under a write):
                # _run waits for its thread even when cancelled.
                await asyncio.wait([in_flight])
                if not in_flight.cancelled():
                    in_flight.exception()  # retrieved: the first failure is re-raised
            if fd is not None:
                await self._run(_cut_and_close, fd, offset)
            raise
        return written

    async def truncate(self, session_id: str, size: int) -> None:
        await self._run(os.truncate, self._spool(session_id), size)

    async def hash_spool(self, session_id: str, algorithm: str) -> str:
        return await self._run(_hash_file, self._spool(session_id), algorithm)

    async def commit(self, session_id: str, digest: Digest) -> None:
        await self._run(self._commit, self._spool(session_id), digest)

    def _commit(self, spool: Path, digest: Digest) -> None:
        target = self._path(digest)
        if target.is_file():
            spool.unlink(missing_ok=True)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        if self.fsync:
            _fsync(spool, os.O_RDONLY)
        os.replace(spool, target)
        if self.fsync:
            _fsync(target.parent, os.O_RDONLY)

    async def discard(self, session_id: str) -> None:
        await self._run(self._spool(session_id).unlink, True)

    async def spool_reader(self, session_id: str, start: int, length: int
                           ) -> AsyncIterator[bytes]:
        # An open file survives the spool's rename at commit (POSIX); a spool
        # shorter than asked was cut back under us.
        def gone() -> Exception:
            return SessionMissing(session_id)

        return await self._file_chunks(self._spool(session_id), start, length, gone,
                                       cut=gone)

    async def _file_chunks(self, path: Path, start: int, length: int | None,
                           missing: Callable[[], Exception], *,
                           cut: Callable[[], Exception] | None = None
                           ) -> AsyncIterator[bytes]:
        """``length`` bytes of ``path`` from ``start`` (None: to its end), each read
        in a pool thread. ``missing()`` is raised when there is no such file, and
        ``cut()``, if given, when it ends before ``length`` (else it just ends)."""
        def open_at() -> Any:
            try:
                f = open(path, 'rb', buffering=0)  # noqa: SIM115
            except FileNotFoundError:
                raise missing() from None
            f.seek(start)
            return f

        f = await self._run(open_at)

        async def chunks() -> AsyncIterator[bytes]:
            remaining = length
            try:
                while remaining is None or remaining > 0:
                    want = READ_CHUNK if remaining is None else min(READ_CHUNK, remaining)
                    chunk = await self._run(f.read, want)
                    if not chunk:
                        if cut is not None and remaining is not None:
                            raise cut()
                        break
                    if remaining is not None:
                        remaining -= len(chunk)
                    yield chunk
            finally:
                f.close()  # closing a read-only file does no I/O worth a hop

        return chunks()

    async def spools(self) -> list[SpoolInfo]:
        def scan() -> list[SpoolInfo]:
            found = []
            for entry in os.scandir(self._uploads):
                if entry.name.startswith('.'):
                    continue
                try:
                    found.append(SpoolInfo(entry.name, entry.stat().st_mtime))
                except FileNotFoundError:
                    continue
            return found

        return await self._run(scan)

    async def redirect_url(self, digest: Digest) -> str | None:
        return None  # files are streamed by this process

    async def check(self) -> str:
        def probe() -> str:
            # A write, a flush and a delete under uploads/: proves the disk takes
            # writes where pushes land.
            path = self._uploads / f'.ready-{uuid.uuid4()}'
            try:
                fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
                try:
                    os.write(fd, b'ok')
                finally:
                    os.close(fd)
                path.unlink()
                return 'ok'
            except OSError as ex:
                return f'storage not writable: {ex.strerror}'

        return await self._run(probe)


def _listdir(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


def _scan_prefix(prefix: Path, algorithm: str, length: int) -> list[BlobInfo]:
    found = []
    try:
        entries = sorted(os.scandir(prefix), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []
    for entry in entries:
        name = entry.name
        if len(name) != length or not name.startswith(prefix.name):
            continue
        try:
            st = entry.stat()
        except FileNotFoundError:
            continue
        found.append(BlobInfo(f'{algorithm}:{name}', st.st_size, st.st_mtime))
    return found


def _hash_file(path: Path, algorithm: str) -> str:
    h = Digest(algorithm, '').hasher()
    try:
        with open(path, 'rb', buffering=0) as f:
            while chunk := f.read(READ_CHUNK):
                h.update(chunk)
    except FileNotFoundError:
        raise BlobMissing(path.name) from None
    return h.hexdigest()


def _write_all(fd: int, chunks: list[bytes]) -> int:
    """One writev for the batch (no join, no copy); it releases the GIL. A short
    write (disk full, signal) is finished by hand. Returns the bytes written."""
    total = sum(map(len, chunks))
    done = os.writev(fd, chunks) if chunks else 0
    if done < total:
        rest = memoryview(b''.join(chunks))[done:]
        while rest:
            rest = rest[os.write(fd, rest):]
    return total


_SYNC_FILE_RANGE_WRITE = 2  # linux/fs.h: start writeback of dirty pages, don't wait


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """Linux's sync_file_range(2) (the os module has none), or None elsewhere."""
    if not sys.platform.startswith('linux'):
        return None
    import ctypes  # here: only a server with fsync on, pushing, needs it

    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    fn.restype = ctypes.c_int
    return fn


def _start_writeback(fd: int, offset: int, size: int) -> None:
    """Ask the kernel to start writing ``size`` bytes at ``offset`` to disk. Only
    a head start: the fsync before commit is what makes the blob durable, so a
    failure here changes nothing and is ignored."""
    fn = _sync_file_range()
    if fn is not None:
        fn(fd, offset, size, _SYNC_FILE_RANGE_WRITE)


def _open_at(path: Path, session_id: str, offset: int) -> int:
    """Open a spool for writing at ``offset``, cutting off whatever a broken request
    left beyond it."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        raise SessionMissing(session_id) from None
    try:
        os.ftruncate(fd, offset)
        os.lseek(fd, offset, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _cut_and_close(fd: int, size: int) -> None:
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ['FilesystemBlobStore']
