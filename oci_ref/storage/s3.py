"""The scale-out blob store: content-addressed objects in an S3-compatible bucket.

Keys under the configured prefix::

    blobs/sha256/ab/ab12…ef   verified content, named by its digest (as on disk)
    uploads/<spool>/p<n>      a pending piece of an upload (bytes not yet in a part)
    uploads/<spool>/data      the multipart upload's target; copied into blobs/ once
                              its digest was verified, then deleted
    quarantine/…              corrupt content moved aside by ``fsck --repair``

Uploads (``s3_spools.py``): multipart uploads whose id, part ETags and resumable
hash live in the metadata store. A blob key is written only by :meth:`commit`, after
the caller verified the digest; it becomes visible to clients only once the metadata
store links it. The calls (``s3_client.py``) each run under a deadline and fail as
:class:`StoreUnavailable` naming this store.

Hashing and joining bytes run in this store's thread pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from oci_ref.reference import ALGORITHMS, Digest
from oci_ref.storage.interfaces import (
    BlobInfo,
    BlobMissing,
    MetadataStore,
)
from oci_ref.storage.s3_client import S3Client, S3Missing, S3Settings
from oci_ref.storage.s3_spools import MIN_PART, S3Spools

T = TypeVar('T')

READ_CHUNK = 1024 * 1024
# CopyObject copies at most 5 GiB; larger objects are copied part by part.
COPY_MAX = 5 * 1024 ** 3
COPY_PART = 1024 ** 3
POOL_SIZE = 8


class S3BlobStore(S3Spools):
    """Blobs in one bucket (under one prefix); spool state in ``meta``."""

    name = 'blobs (s3)'
    chunk_min_length = MIN_PART  # S3's smallest part but the last

    def __init__(self, settings: S3Settings, meta: MetadataStore, *,
                 pool_size: int = POOL_SIZE):
        self.settings = settings
        self.meta = meta
        self.s3 = S3Client(settings, self.name)
        self._pool = ThreadPoolExecutor(pool_size, thread_name_prefix='oci-ref-s3')

    def close(self) -> None:
        self.s3.close()
        self._pool.shutdown(wait=True)

    async def _thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def key(self, digest: Digest) -> str:
        return (f'{self.settings.prefix}blobs/{digest.algorithm}/{digest.encoded[:2]}/'
                f'{digest.encoded}')

    # -- content -------------------------------------------------------------------

    async def exists(self, digest: Digest) -> bool:
        return await self._exists(self.key(digest))

    async def _exists(self, key: str) -> bool:
        try:
            await self.s3.call('head_object', Key=key)
        except S3Missing:
            return False
        return True

    async def reader(self, digest: Digest, start: int = 0, length: int | None = None
                     ) -> AsyncIterator[bytes]:
        return await self._open(self.key(digest), start, length, str(digest))

    async def _open(self, key: str, start: int, length: int | None, what: str
                    ) -> AsyncIterator[bytes]:
        """GET ``key`` from ``start`` (``length`` bytes, or to the end): raises
        BlobMissing now; each read of the body runs under the deadline."""
        if length == 0:
            if not await self._exists(key):
                raise BlobMissing(what)
            return _empty()
        kw: dict[str, Any] = {}
        if start or length is not None:
            end = '' if length is None else str(start + length - 1)
            kw['Range'] = f'bytes={start}-{end}'
        try:
            resp = await self.s3.call('get_object', Key=key, **kw)
        except S3Missing:
            raise BlobMissing(what) from None
        body = resp['Body']

        async def chunks() -> AsyncIterator[bytes]:
            try:
                while True:
                    chunk = await self.s3.guard('get_object (body)',
                                                body.read(READ_CHUNK))
                    if not chunk:
                        break
                    yield chunk
            finally:
                body.close()

        return chunks()

    async def delete(self, digest: Digest) -> None:
        await self.s3.call('delete_object', Key=self.key(digest))

    async def scan(self) -> AsyncIterator[BlobInfo]:
        # Listing is for GC and fsck over content only; uploads are never found
        # this way (their state is in the metadata store).
        for algorithm, length in ALGORITHMS.items():
            top = f'{self.settings.prefix}blobs/{algorithm}/'
            token: str | None = None
            while True:
                kw: dict[str, Any] = {'Prefix': top}
                if token:
                    kw['ContinuationToken'] = token
                page = await self.s3.call('list_objects_v2', **kw)
                for obj in page.get('Contents', []):
                    rest = obj['Key'][len(top):]
                    prefix, _, encoded = rest.partition('/')
                    if len(encoded) != length or not encoded.startswith(prefix) \
                            or len(prefix) != 2:
                        continue
                    yield BlobInfo(f'{algorithm}:{encoded}', obj['Size'],
                                   obj['LastModified'].timestamp())
                if not page.get('IsTruncated'):
                    break
                token = page.get('NextContinuationToken')

    async def hash(self, digest: Digest) -> str:
        h = Digest(digest.algorithm, '').hasher()
        async for chunk in await self.reader(digest):
            await self._thread(h.update, chunk)
        return h.hexdigest()

    async def quarantine(self, digest: Digest) -> None:
        source = self.key(digest)
        target = (f'{self.settings.prefix}quarantine/{digest.algorithm}/'
                  f'{digest.encoded}')
        try:
            head = await self.s3.call('head_object', Key=source)
            await self.copy(source, target, head['ContentLength'])
        except S3Missing:
            raise BlobMissing(str(digest)) from None
        await self.s3.call('delete_object', Key=source)

    async def quarantine_manifest(self, repo: str, digest: str, content: bytes) -> None:
        key = (f'{self.settings.prefix}quarantine/manifests/'
               f'{repo.replace("/", "_")}@{digest}')
        await self.s3.call('put_object', Key=key, Body=content)

    async def copy(self, source: str, target: str, size: int) -> None:
        """Server-side copy (no bytes through this process)."""
        src = {'Bucket': self.settings.bucket, 'Key': source}
        if size <= COPY_MAX:
            await self.s3.call('copy_object', Key=target, CopySource=src)
            return
        mpu = await self.s3.call('create_multipart_upload', Key=target)
        upload_id = mpu['UploadId']
        try:
            parts = []
            for n, first in enumerate(range(0, size, COPY_PART), 1):
                last = min(first + COPY_PART, size) - 1
                r = await self.s3.call('upload_part_copy', Key=target, UploadId=upload_id,
                                       PartNumber=n, CopySource=src,
                                       CopySourceRange=f'bytes={first}-{last}')
                parts.append({'PartNumber': n, 'ETag': r['CopyPartResult']['ETag']})
            await self.s3.call('complete_multipart_upload', Key=target,
                               UploadId=upload_id, MultipartUpload={'Parts': parts})
        except BaseException:
            await self._abort(target, upload_id)
            raise

    async def redirect_url(self, digest: Digest) -> str | None:
        if not self.settings.redirect:
            return None
        return await self.s3.presign_get(self.key(digest))

    async def check(self) -> str:
        # A write and a delete where uploads land: proves the bucket takes writes.
        key = f'{self.settings.prefix}uploads/.ready-{uuid.uuid4()}'
        try:
            await self.s3.call('put_object', Key=key, Body=b'ok')
            await self.s3.call('delete_object', Key=key)
        except Exception as ex:
            return f'S3 not writable: {ex}'
        return 'ok'


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b''  # an async generator that yields nothing


__all__ = ['S3BlobStore']
