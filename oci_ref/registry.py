"""The registry service: every distribution-spec operation, without HTTP.

It orchestrates the blob store (bytes) and the metadata (SQLite) and raises
RegistryError with the spec's codes; the api/ resources only translate HTTP to calls
here and results back to headers.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from oci_ref.blobstore import BlobStore, BodyTooLarge, SpoolBusy, SpoolMissing
from oci_ref.config import Config
from oci_ref.errors import ErrorCode, ErrorEntry, RegistryError
from oci_ref.manifest import MAX_REPORTED, parse_manifest
from oci_ref.metadata import ManifestRecord, Metadata, Referrer, Upload
from oci_ref.reference import (
    TAG_RULE,
    Digest,
    digest_problem,
    is_digest_reference,
    is_valid_name,
    is_valid_tag,
)

if TYPE_CHECKING:
    from hashlib import _Hash

SESSION_ID_RE = re.compile(r'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}')
# end-7b: the spec asks registries to accept at least 10 ?tag= values; past our
# limit the spec's answer is 414.
MAX_TAGS_PER_PUT = 100
# Manifests larger than this are validated in a thread (see put_manifest).
PARSE_INLINE_MAX = 64 * 1024
# Streaming hashers kept per process for sessions between requests (see _hashers).
HASHER_CACHE_SIZE = 1024


def upload_location(name: str, session_id: str) -> str:
    return f'/v2/{name}/blobs/uploads/{session_id}'


def blob_location(name: str, digest: Digest | str) -> str:
    return f'/v2/{name}/blobs/{digest}'


def manifest_location(name: str, digest: Digest | str) -> str:
    return f'/v2/{name}/manifests/{digest}'


def upload_range(size: int) -> str:
    # §Pushing a blob in chunks: Range is 0-<last byte received>, inclusive, no
    # "bytes=" prefix; an empty session reports 0-0 as distribution does.
    return f'0-{max(size - 1, 0)}'


@dataclass(frozen=True, slots=True)
class Policy:
    """What this deployment allows (§Content Management: deletes MAY be disabled)."""

    delete_manifests: bool = True
    delete_tags: bool = True
    delete_blobs: bool = True
    read_only: bool = False
    sparse_manifests: bool = False
    automatic_mount: bool = True
    upload_ttl: int = 86400
    max_upload_sessions: int = 1000

    @classmethod
    def from_config(cls, config: Config) -> Policy:
        return cls(**{f: getattr(config, f) for f in cls.__dataclass_fields__})


@dataclass(frozen=True, slots=True)
class PushedManifest:
    digest: Digest
    media_type: str
    subject: str | None
    tags: tuple[str, ...]


T = TypeVar('T')


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    more: bool


class Registry:
    def __init__(
        self,
        root: Path,
        *,
        fsync: bool = True,
        policy: Policy | None = None,
    ):
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.store = BlobStore(root, fsync=fsync)
        self.meta = Metadata(root / 'oci-ref.db')
        self.policy = policy or Policy()
        # session id -> (offset, {algorithm: hasher}). Hash objects cannot be
        # persisted, so they only save the re-read at commit when the same process
        # sees every chunk of a session (the common case); any gap -> re-hash.
        self._hashers: OrderedDict[str, tuple[int, dict[str, _Hash]]] = OrderedDict()

    def close(self) -> None:
        self.meta.close()

    # -- blobs (end-2, end-10) ---------------------------------------------------

    def blob_size(self, name: str, digest: str) -> tuple[Digest, int]:
        d = Digest.parse(digest)
        size = self.meta.blob_size(name, str(d))
        if size is None:
            raise RegistryError(ErrorCode.BLOB_UNKNOWN, detail={'digest': str(d)})
        return d, size

    def delete_blob(self, name: str, digest: str) -> None:
        self._allowed(self.policy.delete_blobs, 'blob deletes are disabled')
        d = Digest.parse(digest)
        if not self.meta.unlink_blob(name, str(d)):
            raise RegistryError(ErrorCode.BLOB_UNKNOWN, detail={'digest': str(d)})

    # -- uploads (end-4a/4b/4c, end-5, end-6, end-11, end-13, end-14) ---------------

    def start_upload(self, name: str, algorithm: str | None = None) -> Upload:
        self._allowed(True)
        cap = self.policy.max_upload_sessions
        if cap and self.meta.count_uploads() >= cap:
            raise RegistryError(
                ErrorCode.TOOMANYREQUESTS,
                f'too many open upload sessions (at most {cap})',
                detail={'rule': 'finish or cancel open sessions, or retry later',
                        'spec': 'distribution-spec §Error Codes (code-14)'},
                headers={'Retry-After': '60'},  # §Error Codes: 429 SHOULD carry it
            )
        session_id = str(uuid.uuid4())
        # Spool first, row second: a row never points at a missing spool.
        self.store.create_spool(session_id)
        self.meta.create_upload(session_id, name, algorithm)
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
            sources = self.meta.blob_repos(digest)
        else:
            return None
        if readable is not None:
            # Only from repositories the caller may pull; else a normal upload (202).
            sources = [s for s in sources if readable(s)]
        d = Digest.parse(digest)
        async with self._committing():
            for source in sources:
                size = self.meta.blob_size(source, digest)
                if size is not None and self.store.exists(d):
                    self.meta.link_blob(name, digest, size)
                    return d
        return None

    @asynccontextmanager
    async def _committing(self) -> AsyncIterator[None]:
        """Hold the GC lock shared while a blob file is committed and linked, so a
        concurrent sweep never deletes a file we are about to link. GC holds it only
        briefly; wait for it without blocking the event loop."""
        while True:
            with self.store.gc_lock(exclusive=False, wait=False) as locked:
                if locked:
                    yield
                    return
            await asyncio.sleep(0.01)

    def get_upload(self, name: str, session_id: str) -> Upload:
        upload = None
        if SESSION_ID_RE.fullmatch(session_id):
            upload = self.meta.get_upload(session_id)
        if upload is not None and (
                upload.updated_at < time.time() - self.policy.upload_ttl
                or not self.store.spool_path(upload.id).is_file()):
            # Idle past its TTL, or its spool is gone (a crash after the blob was
            # committed but before the row was removed): the session is over.
            self._drop_session(upload.id)
            upload = None
        if upload is None or upload.repo != name:
            # A session is bound to the repository it was opened for.
            raise RegistryError(
                ErrorCode.BLOB_UPLOAD_UNKNOWN, detail={'session_id': session_id[:100]}
            )
        return upload

    def _drop_session(self, session_id: str) -> None:
        self.meta.delete_upload(session_id)
        self.store.discard_spool(self.store.spool_path(session_id))
        self._hashers.pop(session_id, None)

    def purge_uploads(self, now: float | None = None) -> int:
        """Expire idle sessions and remove spools nothing refers to; return how many
        spools went. Safe to run in several workers at once."""
        now = time.time() if now is None else now
        idle_before = now - self.policy.upload_ttl
        removed = 0
        for session_id in self.meta.expire_uploads(idle_before):
            self._drop_session(session_id)
            removed += 1
        live = self.meta.upload_ids()
        for spool in self.store.spools():
            try:
                mtime = spool.stat().st_mtime
            except FileNotFoundError:
                continue
            # A spool is created just before its row, and tmp- spools have none:
            # only spools idle for a while can be orphans.
            if spool.name not in live and mtime < min(idle_before, now - 600):
                self.store.discard_spool(spool)
                removed += 1
        return removed

    def cancel_upload(self, name: str, session_id: str) -> None:
        self._allowed(True)
        upload = self.get_upload(name, session_id)
        self._drop_session(upload.id)

    async def push_monolithic(
        self, name: str, digests: list[str], body: AsyncIterator[bytes]
    ) -> Digest:
        """end-4b: POST ?digest= with the whole blob in the body."""
        self._allowed(True)
        wanted = _parse_digests(digests)
        spool = self.store.temp_spool()
        try:
            with self.store.locked_spool(spool) as fd:
                hashers = {d.algorithm: d.hasher() for d in wanted}
                size = await self.store.append(fd, 0, body, list(hashers.values()))
                _verify(wanted, {a: h.hexdigest() for a, h in hashers.items()})
                async with self._committing():
                    await self.store.commit_async(spool, wanted[0])
                    self.meta.link_blob(name, str(wanted[0]), size)
        finally:
            self.store.discard_spool(spool)
        return wanted[0]

    async def append_chunk(
        self,
        name: str,
        session_id: str,
        body: AsyncIterator[bytes],
        content_range: tuple[int, int] | ValueError | None,
        content_length: int | None,
    ) -> Upload:
        """end-5: PATCH a chunk (with Content-Range) or a stream (without)."""
        self._allowed(True)
        upload = self.get_upload(name, session_id)
        with self._locked(upload) as (fd, upload):
            written = await self._write_chunk(fd, upload, body, content_range,
                                              content_length)
            size = upload.size + written
            self.meta.set_upload_size(upload.id, size)
        return Upload(upload.id, name, size, upload.algorithm)

    async def finish_upload(
        self,
        name: str,
        session_id: str,
        digests: list[str],
        body: AsyncIterator[bytes],
        content_range: tuple[int, int] | ValueError | None,
        content_length: int | None,
    ) -> Digest:
        """end-6: PUT ?digest=, with an optional last chunk; verify, commit, link."""
        self._allowed(True)
        upload = self.get_upload(name, session_id)
        wanted = _parse_digests(digests)
        with self._locked(upload) as (fd, upload):
            written = await self._write_chunk(fd, upload, body, content_range,
                                              content_length)
            size = upload.size + written
            spool = self.store.spool_path(upload.id)
            cached = self._hashers.pop(upload.id, None)
            hashers = cached[1] if cached and cached[0] == size else {}
            actual = {}
            for d in wanted:
                actual[d.algorithm] = (
                    hashers[d.algorithm].hexdigest() if d.algorithm in hashers
                    else await self.store.hash_file_async(spool, d.algorithm))
            try:
                _verify(wanted, actual)
            except RegistryError:
                # The session survives a bad digest; only this request's chunk goes.
                self.store.truncate(fd, upload.size)
                raise
            async with self._committing():
                await self.store.commit_async(spool, wanted[0])
                self.meta.finish_upload(upload.id, name, str(wanted[0]), size)
        return wanted[0]

    @contextmanager
    def _locked(self, upload: Upload) -> Iterator[tuple[int, Upload]]:
        """Lock a session's spool and re-read its state under the lock.

        Between our first look and the lock another worker may have appended,
        finished or cancelled the session; and a spool shorter than the recorded
        size lost data in a crash, so that session cannot be continued.
        """
        path = self.store.spool_path(upload.id)
        try:
            with self.store.locked_spool(path, create=False) as fd:
                fresh = self.meta.get_upload(upload.id)
                if fresh is None or path.stat().st_size < fresh.size:
                    raise RegistryError(
                        ErrorCode.BLOB_UPLOAD_UNKNOWN, detail={'session_id': upload.id}
                    )
                yield fd, fresh
        except SpoolMissing:
            self.meta.delete_upload(upload.id)
            raise RegistryError(
                ErrorCode.BLOB_UPLOAD_UNKNOWN, detail={'session_id': upload.id}
            ) from None
        except SpoolBusy:
            raise self._range_error(
                upload, 'another request is writing to this session'
            ) from None

    async def _write_chunk(
        self,
        fd: int,
        upload: Upload,
        body: AsyncIterator[bytes],
        content_range: tuple[int, int] | ValueError | None,
        content_length: int | None,
    ) -> int:
        expected = None
        if isinstance(content_range, ValueError):
            raise self._range_error(upload, str(content_range))
        if content_range is not None:
            start, end = content_range
            if start != upload.size:
                raise self._range_error(upload, f'chunk starts at {start}, but '
                                                f'{upload.size} bytes were received')
            expected = end - start + 1
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
            written = await self.store.append(
                fd, upload.size, body, list(hashers.values()), limit=expected
            )
        except BodyTooLarge:
            written = -1
        except BaseException:
            self._hashers.pop(upload.id, None)
            raise
        if expected is not None and written != expected:
            self.store.truncate(fd, upload.size)
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

    # -- manifests (end-3, end-7, end-9) -------------------------------------------

    async def put_manifest(
        self,
        name: str,
        reference: str,
        body: bytes,
        content_type: str | None,
        extra_tags: list[str] | None = None,
    ) -> PushedManifest:
        self._allowed(True)
        tags: list[str] = []
        if is_digest_reference(reference):
            digest = Digest.parse(reference)
            actual = Digest.of(body, digest.algorithm)
            if actual != digest:
                raise RegistryError(
                    ErrorCode.DIGEST_INVALID,
                    detail={
                        'rule': 'the manifest body must hash to the digest in the URL',
                        'digest': str(digest),
                        'actual': str(actual),
                        'spec': 'distribution-spec §Pushing Manifests',
                    },
                )
        else:
            digest = Digest.of(body)
            tags.append(reference)
        tags.extend(extra_tags or ())
        if len(tags) > MAX_TAGS_PER_PUT:
            raise RegistryError(
                ErrorCode.UNSUPPORTED,
                f'at most {MAX_TAGS_PER_PUT} tags per request',
                status=414,
            )
        for tag in tags:
            if not is_valid_tag(tag):
                raise RegistryError(
                    ErrorCode.MANIFEST_INVALID, f'invalid tag {tag[:200]!r}',
                    detail={'tag': tag[:200], **TAG_RULE},
                )
        if len(body) > PARSE_INLINE_MAX:
            # Validating megabytes of JSON takes a while: do it off the event loop
            # so other requests keep flowing (the schema is pure, thread-safe code).
            parsed = await asyncio.to_thread(parse_manifest, body, content_type)
        else:
            parsed = parse_manifest(body, content_type)
        missing = self.meta.put_manifest(
            name,
            str(digest),
            parsed.media_type,
            body,
            subject=parsed.subject.digest if parsed.subject else None,
            artifact_type=parsed.artifact_type,
            annotations=parsed.annotations,
            blobs=[d.digest for d in parsed.required_blobs()],
            children=[d.digest for d in parsed.manifests],
            tags=list(dict.fromkeys(tags)),
            sparse=self.policy.sparse_manifests,
        )
        if missing:
            raise _blobs_unknown(missing)
        return PushedManifest(
            digest,
            parsed.media_type,
            parsed.subject.digest if parsed.subject else None,
            tuple(t for t in dict.fromkeys(tags) if t != reference),
        )

    def get_manifest(self, name: str, reference: str) -> ManifestRecord:
        """end-3. A reference that is neither a tag nor a valid digest can name no
        manifest: 404, the only failure end-3 lists (an invalid tag likewise)."""
        record = None
        if is_digest_reference(reference):
            problem = digest_problem(reference)
            if problem is not None:
                raise self._manifest_unknown(name, reference, problem)
            record = self.meta.get_manifest(name, reference)
        elif is_valid_tag(reference):
            record = self.meta.get_tagged_manifest(name, reference)
        if record is None:
            raise self._manifest_unknown(
                name, reference, None if is_valid_tag(reference) or
                is_digest_reference(reference) else TAG_RULE['rule'])
        return record

    def delete_manifest(self, name: str, reference: str) -> None:
        if is_digest_reference(reference):
            self._allowed(self.policy.delete_manifests, 'manifest deletes are disabled')
            deleted = self.meta.delete_manifest(name, str(Digest.parse(reference)))
        else:
            self._allowed(self.policy.delete_tags, 'tag deletes are disabled')
            deleted = is_valid_tag(reference) and self.meta.delete_tag(name, reference)
        if not deleted:
            raise self._manifest_unknown(name, reference)

    def _allowed(self, switch: bool, why: str = '') -> None:
        """405 UNSUPPORTED for writes this deployment refuses (§Content Management:
        a registry MAY disable deletes; disabled answers are 400 or 405)."""
        if self.policy.read_only:
            why = 'the registry is read-only'
        elif switch:
            return
        raise RegistryError(
            ErrorCode.UNSUPPORTED, why,
            detail={'rule': why, 'spec': 'distribution-spec §Content Management'},
        )

    def _manifest_unknown(self, name: str, reference: str, invalid: str | None = None
                          ) -> RegistryError:
        """404; ``invalid`` says why the reference cannot name a manifest at all."""
        if invalid is not None:
            return RegistryError(
                ErrorCode.MANIFEST_UNKNOWN,
                f'{reference[:100]!r} is neither a tag nor a valid digest',
                detail={
                    'reference': reference[:200],
                    'rule': invalid,
                    'spec': 'distribution-spec §Pulling manifests',
                },
            )
        if not self.meta.repo_exists(name):
            return RegistryError(ErrorCode.NAME_UNKNOWN, detail={'name': name})
        return RegistryError(
            ErrorCode.MANIFEST_UNKNOWN, detail={'reference': reference[:200]}
        )

    # -- listings (end-8, end-12, catalog) -------------------------------------------

    def list_tags(self, name: str, last: str | None, n: int) -> Page[str]:
        if not self.meta.repo_exists(name):
            raise RegistryError(ErrorCode.NAME_UNKNOWN, detail={'name': name})
        tags = self.meta.tags(name, last, n + 1) if n else []
        return Page(tags[:n], len(tags) > n)

    def catalog(self, last: str | None, n: int,
                readable: Callable[[str], bool] | None = None) -> Page[str]:
        """A page of repository names; with ``readable``, only those (still exactly
        ``n`` when there are that many, so pagination stays right)."""
        if not n:
            return Page([], False)
        names: list[str] = []
        while True:
            batch = self.meta.repositories(last, max(n + 1, 100))
            names += [r for r in batch if readable is None or readable(r)]
            if len(names) > n or len(batch) < max(n + 1, 100):
                return Page(names[:n], len(names) > n)
            last = batch[-1]

    def referrers(
        self, name: str, digest: str, artifact_type: str | None, last: str | None,
        n: int,
    ) -> Page[Referrer]:
        d = Digest.parse(digest)
        entries = self.meta.referrers(name, str(d), artifact_type, last, n + 1)
        return Page(entries[:n], len(entries) > n)


def _blobs_unknown(missing: list[str]) -> RegistryError:
    """§Push: one MANIFEST_BLOB_UNKNOWN per missing digest, at most MAX_REPORTED (as
    schema errors); the last entry then says how many were left out. The subject is
    never checked (§Pushing Manifests with Subject)."""
    entries = [
        ErrorEntry(
            ErrorCode.MANIFEST_BLOB_UNKNOWN,
            f'blob unknown to repository: {d}',
            {
                'digest': d,
                'rule': 'every descriptor a manifest references must be pushed to '
                '(or mounted in) this repository first',
                'spec': 'distribution-spec §Push',
            },
        )
        for d in missing[:MAX_REPORTED]
    ]
    if len(missing) > MAX_REPORTED:
        entries[-1].detail['omitted'] = (
            f'{len(missing) - MAX_REPORTED} more missing blobs not reported '
            f'({len(missing)} in all)')
    return RegistryError.of(entries)


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
