"""Upload spools on S3: multipart uploads whose state lives in the metadata store.

A spool's state (:class:`SpoolState`, JSON in ``MetadataStore.set_spool_state``) is
everything needed to continue it on any replica; nothing is found by listing the
bucket, and nothing is kept in a process between requests:

- ``mpu``: the multipart upload id (on key ``uploads/<spool>/data``), created when
  the first part is due and recorded before any part is sent, so an upload a crash
  leaves behind is always tracked (the purge aborts it with its spool);
- ``parts``: the part ETags and sizes, in order;
- ``pending``: bytes received but not yet in a part, as small objects
  ``uploads/<spool>/p<n>``. S3 refuses parts under 5 MiB (except the last), so small
  PATCH chunks wait there, in shared storage, until enough arrived: the next append
  reads them back and sends them with its own bytes as one part. A blob that never
  reaches a part (nearly every config and small layer) costs a PUT and a server-side
  copy, no multipart upload (distribution#4122: multipart for tiny blobs is slow);
- ``hash``: the resumable SHA-256 and SHA-512 state over the bytes in ``parts``
  (``resumable_hash.py``). The closing PUT finishes it with the pending bytes only
  (less than a part), so verifying never reads the upload back (parts of an
  unfinished multipart upload cannot be read anyway);
- ``undo``: the state before the last append. The core cuts a spool back to where a
  request began when that request's chunk turns out bad (short body, wrong digest);
  that is exactly ``undo``. Cutting inside the pending bytes works too; cutting
  into bytes already sent as parts cannot, and ends the session (SessionMissing).

A *readable* spool (``create_spool(readable=True)``: the pull-through cache's, which
responses tail while the upstream download grows it, on any replica) never sends
parts while it grows, because parts of an unfinished multipart upload cannot be read
back: each append stays a plain piece object, which ``spool_reader`` reads by range.
The commit then builds the blob server-side, pieces of at least 5 MiB by
``UploadPartCopy`` (the cache appends in batches that large on S3) and only the
small ones (the first, written at once for time to first byte) re-read to join
their neighbour. So the bytes cross the network once up and once server-side, and
a joiner on another replica streams what was downloaded so far instead of waiting
for the whole blob.

An append writes nothing the current state refers to: its parts take the next part
numbers (a failed append's parts are overwritten by the next one) and its piece a
fresh key; the new state is saved in one write at the end.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

from oci_ref.reference import ALGORITHMS, Digest
from oci_ref.storage.bodies import batches
from oci_ref.storage.interfaces import (
    BlobMissing,
    MetadataStore,
    SessionMissing,
    SpoolInfo,
)
from oci_ref.storage.resumable_hash import ResumableHash
from oci_ref.storage.s3_client import S3Client, S3Missing, S3Settings

if TYPE_CHECKING:
    from hashlib import _Hash

T = TypeVar('T')

MiB = 1024 * 1024
# S3's smallest part (but the last); the part size we aim for. The advertised
# OCI-Chunk-Min-Length is the minimum: smaller chunks still work, through pieces.
MIN_PART = 5 * MiB
PART_SIZE = 8 * MiB
# Chunks are handed to the hashing thread in batches this large.
HASH_BATCH = MiB


@dataclass
class SpoolState:
    size: int = 0
    mpu: str | None = None
    parts: list[tuple[str, int]] = field(default_factory=list)      # (etag, size)
    pending: list[tuple[str, int, int]] = field(default_factory=list)  # (key, size, stored)
    hash: dict[str, str] = field(default_factory=dict)  # algorithm -> b64 state
    seq: int = 0
    undo: SpoolState | None = None
    readable: bool = False  # pieces only, never parts (see the module docstring)
    composing: list[str] | None = None  # [key, upload id]: a readable spool's commit

    @property
    def in_parts(self) -> int:
        return sum(size for _, size in self.parts)

    def dump(self) -> bytes:
        return json.dumps(asdict(self), separators=(',', ':')).encode()

    @classmethod
    def load(cls, raw: bytes) -> SpoolState:
        return cls._from(json.loads(raw))

    @classmethod
    def _from(cls, d: dict[str, Any]) -> SpoolState:
        return cls(size=d['size'], mpu=d['mpu'],
                   parts=[(e, s) for e, s in d['parts']],
                   pending=[(k, s, t) for k, s, t in d['pending']],
                   hash=d['hash'], seq=d['seq'], readable=d.get('readable', False),
                   composing=d.get('composing'),
                   undo=None if d.get('undo') is None else cls._from(d['undo']))

    def hashers(self) -> dict[str, ResumableHash]:
        return {a: ResumableHash.resume(a, base64.b64decode(s))
                for a, s in self.hash.items()}


def fresh_state(*, readable: bool = False) -> SpoolState:
    return SpoolState(hash={a: base64.b64encode(ResumableHash(a).state()).decode()
                            for a in ALGORITHMS}, readable=readable)


class S3Spools:
    """The spool half of :class:`~oci_ref.storage.s3.S3BlobStore`."""

    name: str
    settings: S3Settings
    meta: MetadataStore
    s3: S3Client
    part_size: int = PART_SIZE

    async def _thread(self, fn: Callable[..., T], *args: Any) -> T:
        raise NotImplementedError

    def key(self, digest: Digest) -> str:
        raise NotImplementedError

    async def copy(self, source: str, target: str, size: int) -> None:
        raise NotImplementedError

    async def _exists(self, key: str) -> bool:
        raise NotImplementedError

    async def _open(self, key: str, start: int, length: int | None, what: str
                    ) -> AsyncIterator[bytes]:
        raise NotImplementedError

    # -- state --------------------------------------------------------------------

    def _spool_key(self, spool_id: str, leaf: str) -> str:
        if '/' in spool_id or spool_id.startswith('.'):
            raise SessionMissing(spool_id)  # ids are ours; never a key path
        return f'{self.settings.prefix}uploads/{spool_id}/{leaf}'

    async def _state(self, spool_id: str) -> SpoolState:
        raw = await self.meta.spool_state(spool_id)
        if raw is None:
            raise SessionMissing(spool_id)
        return SpoolState.load(raw)

    async def _save(self, spool_id: str, state: SpoolState) -> None:
        await self.meta.set_spool_state(spool_id, state.dump())

    async def _read_pending(self, spool_id: str, pending: list[tuple[str, int, int]]
                            ) -> AsyncIterator[bytes]:
        for key, size, _ in pending:
            if size:
                try:
                    chunks = await self._open(key, 0, size, spool_id)
                except BlobMissing:
                    raise SessionMissing(spool_id) from None
                async for chunk in chunks:
                    yield chunk

    async def _pending_bytes(self, spool_id: str, state: SpoolState) -> bytearray:
        data = bytearray()
        async for chunk in self._read_pending(spool_id, state.pending):
            data += chunk
        return data

    async def _delete_keys(self, keys: set[str]) -> None:
        if len(keys) == 1:
            with contextlib.suppress(S3Missing):
                await self.s3.call('delete_object', Key=keys.pop())
        elif keys:  # one round trip for up to 1000 keys (a spool has a few)
            ordered = sorted(keys)
            for i in range(0, len(ordered), 1000):
                await self.s3.call('delete_objects', Delete={
                    'Objects': [{'Key': k} for k in ordered[i:i + 1000]], 'Quiet': True})

    async def _abort(self, key: str, upload_id: str) -> None:
        with contextlib.suppress(S3Missing):
            await self.s3.call('abort_multipart_upload', Key=key, UploadId=upload_id)

    # -- the interface ----------------------------------------------------------------

    async def create_spool(self, session_id: str, *, readable: bool = False) -> None:
        self._spool_key(session_id, '')
        await self._save(session_id, fresh_state(readable=readable))

    async def spool_size(self, session_id: str) -> int | None:
        raw = await self.meta.spool_state(session_id)
        return None if raw is None else SpoolState.load(raw).size

    async def truncate(self, session_id: str, size: int) -> None:
        state = await self._state(session_id)
        cut, garbage = _cut(state, size, session_id)
        if cut is not state:
            await self._save(session_id, cut)
            await self._delete_keys(garbage)

    async def append(self, session_id: str, offset: int, body: AsyncIterator[bytes],
                     hashers: list[_Hash], *, limit: int | None = None) -> int:
        try:
            return await self._append(session_id, offset, body, hashers, limit)
        except S3Missing:
            # Its multipart upload or a piece is gone (aborted elsewhere).
            raise SessionMissing(session_id) from None

    async def _append(self, session_id: str, offset: int, body: AsyncIterator[bytes],
                      hashers: list[_Hash], limit: int | None) -> int:
        state = await self._state(session_id)
        base, garbage = _cut(state, offset, session_id)
        new = replace(base, parts=list(base.parts), pending=list(base.pending),
                      hash=dict(base.hash), undo=None)
        resumable = new.hashers()
        in_pending = sum(size for _, size, _ in new.pending)
        buf = bytearray()
        written = 0

        def absorb(chunks: list[bytes]) -> None:
            for chunk in chunks:
                for h in hashers:
                    h.update(chunk)
                buf.extend(chunk)

        async def flush_part() -> None:
            nonlocal buf, in_pending
            if new.mpu is None:
                mpu = await self.s3.call('create_multipart_upload',
                                         Key=self._spool_key(session_id, 'data'))
                new.mpu = base.mpu = mpu['UploadId']
                # Tracked before any part is sent: a crash from here on leaves an
                # upload the purge finds (through this state) and aborts.
                await self._save(session_id, base)
            data = await self._pending_bytes(session_id, new)
            data += buf
            number = len(new.parts) + 1
            r = await self.s3.call('upload_part', Key=self._spool_key(session_id, 'data'),
                                   UploadId=new.mpu, PartNumber=number, Body=bytes(data))
            await self._thread(_update_all, resumable, data)
            new.parts.append((r['ETag'], len(data)))
            new.pending = []
            in_pending = 0
            buf = bytearray()
            # Renew the state's clock (one small write per part): the purge takes
            # a single-request push streaming for longer than its orphan age for
            # a leftover otherwise.
            await self._save(session_id, base)

        async for batch, last in batches(body, size=HASH_BATCH, limit=limit):
            if not batch:
                continue
            written += sum(map(len, batch))
            await self._thread(absorb, batch)
            if not last and not new.readable and in_pending + len(buf) >= self.part_size:
                await flush_part()
        if not new.readable and in_pending + len(buf) >= max(self.part_size, MIN_PART):
            await flush_part()
        # A readable spool's append is one piece (its caller bounds the batch).
        if buf:
            key = self._spool_key(session_id, f'p{new.seq}')
            await self.s3.call('put_object', Key=key, Body=bytes(buf))
            new.pending.append((key, len(buf), len(buf)))
        new.seq += 1
        new.size = offset + written
        new.hash = {a: base64.b64encode(h.state()).decode() for a, h in resumable.items()}
        new.undo = replace(base, undo=None)
        await self._save(session_id, new)
        # Pieces only the previous undo referred to are no longer reachable.
        keep = {k for k, _, _ in new.pending} | {k for k, _, _ in base.pending}
        if state.undo is not None:
            garbage |= {k for k, _, _ in state.undo.pending} - keep
        await self._delete_keys(garbage - keep)
        return written

    async def hash_spool(self, session_id: str, algorithm: str) -> str:
        state = await self._state(session_id)
        h = state.hashers()[algorithm]
        async for chunk in self._read_pending(session_id, state.pending):
            await self._thread(h.update, chunk)
        return h.hexdigest()

    async def commit(self, session_id: str, digest: Digest) -> None:
        state = await self._state(session_id)
        target = self.key(digest)
        if not await self._exists(target):
            try:
                if state.readable and len(state.pending) > 1 and state.size >= MIN_PART:
                    await self._commit_pieces(session_id, state, target)
                elif state.mpu is None:
                    await self._commit_small(session_id, state, target)
                else:
                    await self._commit_multipart(session_id, state, target)
            except S3Missing:
                raise SessionMissing(session_id) from None
        await self.discard(session_id)

    async def _commit_small(self, spool_id: str, state: SpoolState, target: str) -> None:
        if len(state.pending) == 1 and state.pending[0][1] == state.pending[0][2]:
            await self.copy(state.pending[0][0], target, state.size)
            return
        data = await self._pending_bytes(spool_id, state)  # less than one part
        await self.s3.call('put_object', Key=target, Body=bytes(data))

    async def _commit_pieces(self, spool_id: str, state: SpoolState, target: str
                             ) -> None:
        """A readable spool's pieces joined into ``target`` by one multipart upload
        (completing it is the atomic step): a piece of at least a part's minimum is
        copied server-side; smaller ones are read back and sent with the next
        bytes, so every part but the last has S3's minimum."""
        mpu = await self.s3.call('create_multipart_upload', Key=target)
        upload_id = mpu['UploadId']
        # Tracked before any part is sent: a crash from here on leaves an upload
        # the purge aborts (discard) with the spool.
        await self._save(spool_id, replace(state, composing=[target, upload_id]))
        parts: list[dict[str, Any]] = []

        async def send(data: bytearray) -> None:
            r = await self.s3.call('upload_part', Key=target, UploadId=upload_id,
                                   PartNumber=len(parts) + 1, Body=bytes(data))
            parts.append({'PartNumber': len(parts) + 1, 'ETag': r['ETag']})

        try:
            group = bytearray()
            for key, size, _ in state.pending:
                if not size:
                    continue
                if not group and size >= MIN_PART:
                    r = await self.s3.call(
                        'upload_part_copy', Key=target, UploadId=upload_id,
                        PartNumber=len(parts) + 1,
                        CopySource={'Bucket': self.settings.bucket, 'Key': key},
                        CopySourceRange=f'bytes=0-{size - 1}')
                    parts.append({'PartNumber': len(parts) + 1,
                                  'ETag': r['CopyPartResult']['ETag']})
                    continue
                async for chunk in self._read_pending(spool_id, [(key, size, size)]):
                    group += chunk
                if len(group) >= MIN_PART:
                    await send(group)
                    group = bytearray()
            if group:
                await send(group)
            await self.s3.call('complete_multipart_upload', Key=target,
                               UploadId=upload_id, MultipartUpload={'Parts': parts})
        except BaseException:
            await self._abort(target, upload_id)
            raise
        await self._save(spool_id, state)  # nothing left to abort

    async def spool_reader(self, session_id: str, start: int, length: int
                           ) -> AsyncIterator[bytes]:
        """Read back from the pieces (a readable spool keeps every byte in one);
        bytes already sent as parts cannot be read: SessionMissing, as for a spool
        that is gone (the cache then waits for the committed blob)."""
        state = await self._state(session_id)
        end = start + length
        if end > state.size or start < state.in_parts:
            raise SessionMissing(session_id)
        ranges: list[tuple[str, int, int]] = []  # (key, offset in piece, bytes)
        offset = state.in_parts
        for key, size, _ in state.pending:
            lo, hi = max(start, offset), min(end, offset + size)
            if lo < hi:
                ranges.append((key, lo - offset, hi - lo))
            offset += size
        if not ranges:
            return _nothing()
        try:  # opened now: a spool committed meanwhile says so before any byte
            first = await self._open(ranges[0][0], ranges[0][1], ranges[0][2],
                                     session_id)
        except BlobMissing:
            raise SessionMissing(session_id) from None

        async def chunks() -> AsyncIterator[bytes]:
            opened = first
            for i in range(len(ranges)):
                if i:
                    key, at, n = ranges[i]
                    try:
                        opened = await self._open(key, at, n, session_id)
                    except BlobMissing:
                        # Committed and discarded under us: the caller re-asks.
                        raise SessionMissing(session_id) from None
                async for chunk in opened:
                    yield chunk

        return chunks()

    async def _commit_multipart(self, spool_id: str, state: SpoolState, target: str
                                ) -> None:
        data_key = self._spool_key(spool_id, 'data')
        head = await self._head(data_key)
        if head is None or head['ContentLength'] != state.size:
            await self._complete(spool_id, state, data_key)
        # else: completed by an earlier attempt that died before the copy (servers
        # differ in what a completed upload answers to more parts: AWS 404, moto 500)
        await self.copy(data_key, target, state.size)

    async def _complete(self, spool_id: str, state: SpoolState, data_key: str) -> None:
        parts = [{'PartNumber': n, 'ETag': etag}
                 for n, (etag, _) in enumerate(state.parts, 1)]
        if state.pending:
            data = await self._pending_bytes(spool_id, state)
            r = await self.s3.call('upload_part', Key=data_key, UploadId=state.mpu,
                                   PartNumber=len(parts) + 1, Body=bytes(data))
            parts.append({'PartNumber': len(parts) + 1, 'ETag': r['ETag']})
        await self.s3.call('complete_multipart_upload', Key=data_key,
                           UploadId=state.mpu, MultipartUpload={'Parts': parts})

    async def _head(self, key: str) -> dict[str, Any] | None:
        try:
            head: dict[str, Any] = await self.s3.call('head_object', Key=key)
        except S3Missing:
            return None
        return head

    async def discard(self, session_id: str) -> None:
        try:
            state = await self._state(session_id)
        except SessionMissing:
            return
        # The piece a failed append may have written, and the completed upload.
        keys = {self._spool_key(session_id, f'p{state.seq}')}
        if state.mpu is not None:
            keys.add(self._spool_key(session_id, 'data'))
        for s in (state, state.undo):
            if s is not None:
                keys |= {k for k, _, _ in s.pending}
        if state.mpu is not None:
            await self._abort(self._spool_key(session_id, 'data'), state.mpu)
        if state.composing is not None:
            await self._abort(*state.composing)
        await self._delete_keys(keys)
        # Last: a crash before this leaves the state, and the purge tries again.
        await self.meta.delete_spool_state(session_id)

    async def spools(self) -> list[SpoolInfo]:
        return [SpoolInfo(i, t) for i, t in await self.meta.spool_states()]


def _cut(state: SpoolState, size: int, spool_id: str) -> tuple[SpoolState, set[str]]:
    """``state`` cut back to ``size`` bytes, and the piece keys that drops."""
    if size == state.size:
        return state, set()
    if size > state.size:
        raise SessionMissing(spool_id)  # a recorded size the spool never had
    if state.undo is not None and size == state.undo.size:
        undo = state.undo
        dropped = {k for k, _, _ in state.pending} - {k for k, _, _ in undo.pending}
        return replace(undo, seq=state.seq, undo=None), dropped
    keep = size - state.in_parts
    if keep < 0:
        raise SessionMissing(spool_id)  # those bytes went to S3 as parts already
    pending: list[tuple[str, int, int]] = []
    dropped = set()
    for key, n, stored in state.pending:
        if keep > 0:
            pending.append((key, min(n, keep), stored))
            keep -= min(n, keep)
        else:
            dropped.add(key)
    return replace(state, size=size, pending=pending, undo=None), dropped


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b''  # an async generator that yields nothing


def _update_all(hashers: dict[str, ResumableHash], data: bytearray) -> None:
    for h in hashers.values():
        h.update(data)


__all__ = ['MIN_PART', 'PART_SIZE', 'S3Spools', 'SpoolState']
