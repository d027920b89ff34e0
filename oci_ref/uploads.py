"""Blob uploads and mounts (end-4a/4b/4c, end-5, end-6, end-11, end-13, end-14),
without HTTP: the part of :class:`~oci_ref.registry.Registry` that moves bytes.

A session's state is its metadata-store row and its blob-store spool, never process
memory, so any worker (or replica) continues any session. A request writing to a
session holds the store's claim on it (others get 416; expiry and the purge leave it
alone); a blob becomes visible only after its digest is verified, its content
committed and its link written, while the ``gc`` lock is held shared.
"""

from __future__ import annotations

import re
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from oci_ref.errors import ErrorCode, RegistryError
from oci_ref.reference import Digest, digest_problem, is_valid_name
from oci_ref.storage.interfaces import (
    BlobStore,
    BodyTooLarge,
    Clock,
    Lease,
    MetadataStore,
    SessionBusy,
    SessionMissing,
    Upload,
)

if TYPE_CHECKING:
    from hashlib import _Hash

    from oci_ref.registry import Policy

SESSION_ID_RE = re.compile(r'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}')

# Streaming hashers kept per process for sessions between requests (see _hashers).
HASHER_CACHE_SIZE = 1024
# Spools without a session older than this are orphans (a session's spool is made
# just before its row, and a single-request push's spool never gets one).
ORPHAN_SPOOL_AGE = 600
GC_LOCK = 'gc'


def upload_location(name: str, session_id: str) -> str:
    return f'/v2/{name}/blobs/uploads/{session_id}'


def upload_range(size: int) -> str:
    # §Pushing a blob in chunks: Range is 0-<last byte received>, inclusive, no
    # "bytes=" prefix; an empty session reports 0-0 as distribution does.
    return f'0-{max(size - 1, 0)}'


@dataclass(frozen=True, slots=True)
class ContentRange:
    """A chunk's ``Content-Range`` (``start``-``end``, inclusive), or, when
    ``problem`` is set, why the header was malformed (answered 416 with the
    session's state once the session is known)."""

    start: int
    end: int
    problem: str | None = None

    @classmethod
    def invalid(cls, problem: str) -> ContentRange:
        return cls(0, -1, problem)

    @property
    def length(self) -> int:
        return self.end - self.start + 1


class UploadOperations:
    """The upload half of :class:`~oci_ref.registry.Registry` (mixed into it)."""

    blobs: BlobStore
    meta: MetadataStore
    policy: Policy
    clock: Clock
    # session id -> (offset, {algorithm: hasher}); see Registry.__init__.
    _hashers: OrderedDict[str, tuple[int, dict[str, _Hash]]]

    def _allowed(self, switch: bool, why: str = '') -> None:
        raise NotImplementedError  # Registry's policy check

    async def start_upload(self, name: str, algorithm: str | None = None) -> Upload:
        self._allowed(True)
        cap = self.policy.max_upload_sessions
        session_id = str(uuid.uuid4())
        # Spool first, row second: a row never points at a missing spool. If the
        # row cannot be written (cap reached, store unavailable), the spool goes.
        await self.blobs.create_spool(session_id)
        try:
            created = await self.meta.create_upload(session_id, name, algorithm, cap=cap)
        except BaseException:
            await self.blobs.discard(session_id)
            raise
        if not created:
            await self.blobs.discard(session_id)
            raise RegistryError(
                ErrorCode.TOOMANYREQUESTS,
                f'too many open upload sessions (at most {cap})',
                detail={'rule': 'finish or cancel open sessions, or retry later',
                        'spec': 'distribution-spec §Error Codes (code-14)'},
                headers={'Retry-After': '60'},  # §Error Codes: 429 SHOULD carry it
            )
        return Upload(session_id, name, 0, algorithm)

    async def mount_blob(self, name: str, digest: str, from_: str | None,
                         readable: Callable[[str], bool] | None = None
                         ) -> Digest | None:
        """end-11: link an existing blob into ``name``; None means "not mountable".

        The spec falls back to a normal upload (202) when the mount arguments are
        invalid or the blob is not found, so nothing here raises.
        """
        self._allowed(True)
        if digest_problem(digest) is not None:
            return None
        if from_ is not None:
            if not is_valid_name(from_):
                return None
            sources = [from_]
        elif self.policy.automatic_mount:
            # Anonymous mount: any repository the caller may read (all, when open).
            sources = await self.meta.blob_repos(digest)
        else:
            return None
        if readable is not None:
            # Only from repositories the caller may pull; else a normal upload (202).
            sources = [s for s in sources if readable(s)]
        if not sources:
            return None
        d = Digest.parse(digest)
        # The GC lock, shared: a sweep never deletes a file we are about to link.
        async with self.meta.lock(GC_LOCK, exclusive=False, wait=True) as gc:
            if not await self.blobs.exists(d):
                return None
            size = await self.meta.mount_blob(name, digest, sources, release=_held(gc))
        return None if size is None else d

    async def get_upload(self, name: str, session_id: str) -> Upload:
        """end-13: the session's state; an idle session past its TTL, or one whose
        spool is gone, is over (and removed)."""
        upload = None
        if SESSION_ID_RE.fullmatch(session_id):
            upload = await self.meta.get_upload(session_id)
        # Idle past its TTL, and only if nobody holds it (an upload in progress is
        # never expired).
        if (upload is not None and upload.updated_at < self._idle_before()
                and await self.meta.expire_uploads(self._idle_before(), only=upload.id)):
            await self._forget(upload.id)
            upload = None
        if upload is not None and await self.blobs.spool_size(upload.id) is None:
            # A crash after the blob was committed but before the row was removed.
            await self.meta.delete_upload(upload.id)
            upload = None
        if upload is None or upload.repo != name:
            # A session is bound to the repository it was opened for.
            raise self._upload_unknown(session_id)
        return upload

    def _idle_before(self) -> float:
        return self.clock() - self.policy.upload_ttl

    def _upload_unknown(self, session_id: str) -> RegistryError:
        return RegistryError(
            ErrorCode.BLOB_UPLOAD_UNKNOWN, detail={'session_id': session_id[:100]})

    async def _forget(self, session_id: str) -> None:
        """After the row is gone: the spool and the cached hashers go too."""
        await self.blobs.discard(session_id)
        self._hashers.pop(session_id, None)

    async def purge_uploads(self) -> int:
        """Expire idle sessions nobody holds and remove spools nothing refers to;
        return how many spools went. Safe to run in several workers at once."""
        now = self.clock()
        idle_before = now - self.policy.upload_ttl
        removed = 0
        for session_id in await self.meta.expire_uploads(idle_before):
            await self._forget(session_id)
            removed += 1
        live = await self.meta.upload_ids()
        for spool in await self.blobs.spools():
            # A spool is created just before its row, and tmp- spools have none:
            # only spools idle for a while can be orphans.
            if spool.id not in live and spool.modified < min(idle_before,
                                                            now - ORPHAN_SPOOL_AGE):
                await self.blobs.discard(spool.id)
                removed += 1
        return removed

    async def cancel_upload(self, name: str, session_id: str) -> None:
        """end-14; a session a request is writing to is refused (416), not pulled
        from under it."""
        self._allowed(True)
        upload = await self.get_upload(name, session_id)
        try:
            async with self.meta.claim_upload(upload.id) as claim:
                if claim.upload is None:
                    raise self._upload_unknown(session_id)
                await self.meta.delete_upload(upload.id)
                await self._forget(upload.id)
        except SessionBusy:
            raise self._range_error(
                upload, 'another request is writing to this session') from None

    async def push_monolithic(
        self, name: str, digests: list[str], body: AsyncIterator[bytes]
    ) -> Digest:
        """end-4b: POST ?digest= with the whole blob in the body."""
        self._allowed(True)
        wanted = _parse_digests(digests)
        spool = f'tmp-{uuid.uuid4()}'
        await self.blobs.create_spool(spool)
        try:
            hashers = {d.algorithm: d.hasher() for d in wanted}
            size = await self.blobs.append(spool, 0, body, list(hashers.values()))
            _verify(wanted, {a: h.hexdigest() for a, h in hashers.items()})
            async with self.meta.lock(GC_LOCK, exclusive=False, wait=True) as gc:
                await self.blobs.commit(spool, wanted[0])
                await self.meta.link_blob(name, str(wanted[0]), size, release=_held(gc))
        finally:
            await self.blobs.discard(spool)
        return wanted[0]

    async def append_chunk(
        self,
        name: str,
        session_id: str,
        body: AsyncIterator[bytes],
        content_range: ContentRange | None,
        content_length: int | None,
    ) -> Upload:
        """end-5: PATCH a chunk (with Content-Range) or a stream (without)."""
        self._allowed(True)
        upload = await self._known(name, session_id)
        async with self._claimed(upload) as (upload, claim):
            written = await self._write_chunk(upload, body, content_range,
                                              content_length)
            size = upload.size + written
            # The new size and the end of the claim: one round trip.
            await self.meta.set_upload_size(upload.id, size, release=[claim])
        return Upload(upload.id, name, size, upload.algorithm)

    async def finish_upload(
        self,
        name: str,
        session_id: str,
        digests: list[str],
        body: AsyncIterator[bytes],
        content_range: ContentRange | None,
        content_length: int | None,
    ) -> Digest:
        """end-6: PUT ?digest=, with an optional last chunk; verify, commit, link."""
        self._allowed(True)
        upload = await self._known(name, session_id)
        wanted = _parse_digests(digests)
        async with self._claimed(upload) as (upload, claim):
            written = await self._write_chunk(upload, body, content_range,
                                              content_length)
            size = upload.size + written
            cached = self._hashers.pop(upload.id, None)
            hashers = cached[1] if cached and cached[0] == size else {}
            actual = {}
            for d in wanted:
                actual[d.algorithm] = (
                    hashers[d.algorithm].hexdigest() if d.algorithm in hashers
                    else await self.blobs.hash_spool(upload.id, d.algorithm))
            try:
                _verify(wanted, actual)
            except RegistryError:
                # The session survives a bad digest; only this request's chunk goes.
                await self.blobs.truncate(upload.id, upload.size)
                raise
            async with self.meta.lock(GC_LOCK, exclusive=False, wait=True) as gc:
                await self.blobs.commit(upload.id, wanted[0])
                # Link, close the session and drop both locks in one transaction.
                await self.meta.finish_upload(upload.id, name, str(wanted[0]), size,
                                              release=[*_held(gc), claim])
        return wanted[0]

    async def _known(self, name: str, session_id: str) -> Upload:
        """A cheap first look (one read): the id's shape and the repository."""
        upload = None
        if SESSION_ID_RE.fullmatch(session_id):
            upload = await self.meta.get_upload(session_id)
        if upload is None or upload.repo != name:
            raise self._upload_unknown(session_id)
        return upload

    @asynccontextmanager
    async def _claimed(self, upload: Upload) -> AsyncIterator[tuple[Upload, Lease]]:
        """Claim the session and re-read its state under the claim.

        Between our first look and the claim another worker may have appended,
        finished or cancelled the session; an idle one may have expired; and a
        spool shorter than the recorded size lost data in a crash, so that session
        cannot be continued. While claimed, expiry and the purge leave it alone.
        """
        try:
            async with self.meta.claim_upload(upload.id) as claim:
                fresh = claim.upload
                if fresh is not None and fresh.updated_at < self._idle_before():
                    # Idle past its TTL before this request came: over.
                    await self.meta.delete_upload(fresh.id)
                    await self._forget(fresh.id)
                    fresh = None
                if fresh is not None:
                    spooled = await self.blobs.spool_size(fresh.id)
                    if spooled is None:
                        await self.meta.delete_upload(fresh.id)
                        fresh = None
                    elif spooled < fresh.size:
                        raise self._upload_unknown(fresh.id)
                if fresh is None:
                    raise self._upload_unknown(upload.id)
                try:
                    yield fresh, claim.lease
                except SessionMissing:
                    await self.meta.delete_upload(fresh.id)
                    raise self._upload_unknown(fresh.id) from None
        except SessionBusy:
            raise self._range_error(
                upload, 'another request is writing to this session') from None

    async def _write_chunk(
        self,
        upload: Upload,
        body: AsyncIterator[bytes],
        content_range: ContentRange | None,
        content_length: int | None,
    ) -> int:
        expected = None
        if content_range is not None and content_range.problem is not None:
            raise self._range_error(upload, content_range.problem)
        if content_range is not None:
            start, end = content_range.start, content_range.end
            if start != upload.size:
                raise self._range_error(upload, f'chunk starts at {start}, but '
                                                f'{upload.size} bytes were received')
            expected = content_range.length
            if content_length is not None and content_length != expected:
                raise RegistryError(
                    ErrorCode.SIZE_INVALID,
                    detail={
                        'rule': 'Content-Length must equal the size of Content-Range',
                        'content_length': content_length,
                        'content_range': f'{start}-{end}',
                        'spec': 'distribution-spec §Pushing a blob in chunks',
                    },
                )
        elif content_length is not None:
            # A declared length is a promise too: a body cut short (the client went
            # away; the ASGI stream just ends) must not become part of the blob.
            expected = content_length
        hashers = self._take_hashers(upload)
        try:
            written = await self.blobs.append(
                upload.id, upload.size, body, list(hashers.values()), limit=expected
            )
        except BodyTooLarge:
            written = -1
        except BaseException:
            self._hashers.pop(upload.id, None)
            raise
        if expected is not None and written != expected:
            await self.blobs.truncate(upload.id, upload.size)
            self._hashers.pop(upload.id, None)
            raise RegistryError(
                ErrorCode.SIZE_INVALID,
                detail={
                    'rule': 'the body must be exactly as long as its Content-Range '
                    'and Content-Length say',
                    'received': max(written, 0),
                    'expected': expected,
                    'spec': 'distribution-spec §Pushing a blob in chunks',
                },
            )
        self._hashers[upload.id] = (upload.size + written, hashers)
        self._hashers.move_to_end(upload.id)
        while len(self._hashers) > HASHER_CACHE_SIZE:
            self._hashers.popitem(last=False)
        return written

    def _take_hashers(self, upload: Upload) -> dict[str, _Hash]:
        cached = self._hashers.pop(upload.id, None)
        if cached is not None and cached[0] == upload.size:
            return cached[1]
        if upload.size == 0:
            # Hash while streaming with the session's declared algorithm (end-4c),
            # else sha256, the one nearly every client uses.
            algorithm = upload.algorithm or 'sha256'
            return {algorithm: Digest(algorithm, '').hasher()}
        return {}

    def _range_error(self, upload: Upload, why: str) -> RegistryError:
        return RegistryError(
            ErrorCode.BLOB_UPLOAD_INVALID,
            f'out-of-order chunk: {why}',
            detail={
                'rule': 'chunks must arrive in order: each Content-Range starts right '
                'after the last byte received',
                'spec': 'distribution-spec §Pushing a blob in chunks',
            },
            status=416,
            headers={
                'Location': upload_location(upload.repo, upload.id),
                'Range': upload_range(upload.size),
                'Docker-Upload-UUID': upload.id,
            },
        )


def _held(lease: Lease | None) -> list[Lease]:
    return [] if lease is None else [lease]


def _parse_digests(values: list[str]) -> list[Digest]:
    if not values:
        raise RegistryError(
            ErrorCode.DIGEST_INVALID,
            'the digest query parameter is required to complete an upload',
            detail={'spec': 'distribution-spec §Pushing a blob in chunks'},
        )
    return [Digest.parse(v) for v in values]


def _verify(wanted: list[Digest], actual: dict[str, str]) -> None:
    for d in wanted:
        if actual[d.algorithm] != d.encoded:
            raise RegistryError(
                ErrorCode.DIGEST_INVALID,
                detail={
                    'rule': 'the uploaded content must hash to the digest parameter',
                    'digest': str(d),
                    'actual': f'{d.algorithm}:{actual[d.algorithm]}',
                    'spec': 'distribution-spec §Pushing blobs',
                },
            )
