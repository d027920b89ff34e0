"""The registry service: every distribution-spec operation, without HTTP.

It orchestrates a blob store (bytes) and a metadata store (everything else), both
given to it (see ``oci_ref.storage``), and raises RegistryError with the spec's
codes; the api/ resources only translate HTTP to calls here and results back to
headers. Every operation that touches storage is a coroutine and awaits the stores,
which do their blocking work off the event loop.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from oci_ref.config import Config
from oci_ref.errors import ErrorCode, ErrorEntry, RegistryError
from oci_ref.manifest import parse_manifest
from oci_ref.reference import (
    TAG_RULE,
    Digest,
    digest_problem,
    is_digest_reference,
    is_valid_name,
    is_valid_tag,
)
from oci_ref.storage.interfaces import (
    BlobMissing,
    BlobStore,
    BodyTooLarge,
    Clock,
    ManifestRecord,
    MetadataStore,
    Referrer,
    SessionBusy,
    SessionMissing,
    Upload,
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
# Spools without a session older than this are orphans (a session's spool is made
# just before its row, and a single-request push's spool never gets one).
ORPHAN_SPOOL_AGE = 600
GC_LOCK = 'gc'


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


@dataclass(frozen=True, slots=True)
class Policy:
    """What this deployment allows (§Content Management: deletes MAY be disabled)."""

    delete_manifests: bool = True
    delete_tags: bool = True
    delete_blobs: bool = True
    read_only: bool = False
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
    """Every distribution-spec operation over an injected pair of stores.

    Holds no storage state of its own besides a per-process cache of streaming
    hashers (an optimisation: any worker can continue any session). Safety rests on
    the metadata store's locks: a session is claimed while a request writes to it,
    and blob commits hold the ``gc`` lock shared while GC sweeps hold it exclusive.
    ``clock`` dates upload activity and GC's grace period (tests move it).
    """

    def __init__(
        self,
        blobs: BlobStore,
        meta: MetadataStore,
        *,
        policy: Policy | None = None,
        clock: Clock = time.time,
    ):
        self.blobs = blobs
        self.meta = meta
        self.policy = policy or Policy()
        self.clock = clock
        # session id -> (offset, {algorithm: hasher}). Hash objects cannot be
        # persisted, so they only save the re-read at commit when the same process
        # sees every chunk of a session (the common case); any gap -> re-hash.
        self._hashers: OrderedDict[str, tuple[int, dict[str, _Hash]]] = OrderedDict()

    def close(self) -> None:
        self.meta.close()
        self.blobs.close()

    # -- blobs (end-2, end-10) ---------------------------------------------------

    async def blob_size(self, name: str, digest: str) -> tuple[Digest, int]:
        d = Digest.parse(digest)
        size = await self.meta.blob_size(name, str(d))
        if size is None:
            raise RegistryError(ErrorCode.BLOB_UNKNOWN, detail={'digest': str(d)})
        return d, size

    async def read_blob(self, digest: Digest, start: int, length: int
                        ) -> AsyncIterator[bytes]:
        """The blob's bytes (opened now: a file lost under a row is a 404 here)."""
        try:
            return await self.blobs.reader(digest, start, length)
        except BlobMissing:
            raise RegistryError(ErrorCode.BLOB_UNKNOWN,
                                detail={'digest': str(digest)}) from None

    async def delete_blob(self, name: str, digest: str) -> None:
        self._allowed(self.policy.delete_blobs, 'blob deletes are disabled')
        d = Digest.parse(digest)
        if not await self.meta.unlink_blob(name, str(d)):
            raise RegistryError(ErrorCode.BLOB_UNKNOWN, detail={'digest': str(d)})

    # -- uploads (end-4a/4b/4c, end-5, end-6, end-11, end-13, end-14) ---------------

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
        else:
            # Anonymous mount: any repository the caller may read (all, when open).
            sources = await self.meta.blob_repos(digest)
        if readable is not None:
            # Only from repositories the caller may pull; else a normal upload (202).
            sources = [s for s in sources if readable(s)]
        if not sources:
            return None
        d = Digest.parse(digest)
        # The GC lock, shared: a sweep never deletes a file we are about to link.
        async with self.meta.lock(GC_LOCK, exclusive=False, wait=True):
            if not await self.blobs.exists(d):
                return None
            size = await self.meta.mount_blob(name, digest, sources)
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
            async with self.meta.claim_upload(upload.id) as fresh:
                if fresh is None:
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
            async with self.meta.lock(GC_LOCK, exclusive=False, wait=True):
                await self.blobs.commit(spool, wanted[0])
                await self.meta.link_blob(name, str(wanted[0]), size)
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
        async with self._claimed(upload) as upload:
            written = await self._write_chunk(upload, body, content_range,
                                              content_length)
            size = upload.size + written
            await self.meta.set_upload_size(upload.id, size)
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
        async with self._claimed(upload) as upload:
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
            async with self.meta.lock(GC_LOCK, exclusive=False, wait=True):
                await self.blobs.commit(upload.id, wanted[0])
                await self.meta.finish_upload(upload.id, name, str(wanted[0]), size)
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
    async def _claimed(self, upload: Upload) -> AsyncIterator[Upload]:
        """Claim the session and re-read its state under the claim.

        Between our first look and the claim another worker may have appended,
        finished or cancelled the session; an idle one may have expired; and a
        spool shorter than the recorded size lost data in a crash, so that session
        cannot be continued. While claimed, expiry and the purge leave it alone.
        """
        try:
            async with self.meta.claim_upload(upload.id) as fresh:
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
                    yield fresh
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
        missing = await self.meta.put_manifest(
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
        )
        if missing:
            raise _blobs_unknown(missing)
        return PushedManifest(
            digest,
            parsed.media_type,
            parsed.subject.digest if parsed.subject else None,
            tuple(t for t in dict.fromkeys(tags) if t != reference),
        )

    async def get_manifest(self, name: str, reference: str) -> ManifestRecord:
        """end-3. A reference that is neither a tag nor a valid digest can name no
        manifest: 404, the only failure end-3 lists (an invalid tag likewise)."""
        record = None
        if is_digest_reference(reference):
            problem = digest_problem(reference)
            if problem is not None:
                raise await self._manifest_unknown(name, reference, problem)
            record = await self.meta.get_manifest(name, reference)
        elif is_valid_tag(reference):
            record = await self.meta.get_tagged_manifest(name, reference)
        if record is None:
            raise await self._manifest_unknown(
                name, reference, None if is_valid_tag(reference) or
                is_digest_reference(reference) else TAG_RULE['rule'])
        return record

    async def delete_manifest(self, name: str, reference: str) -> None:
        if is_digest_reference(reference):
            self._allowed(self.policy.delete_manifests, 'manifest deletes are disabled')
            deleted = await self.meta.delete_manifest(name, str(Digest.parse(reference)))
        else:
            self._allowed(self.policy.delete_tags, 'tag deletes are disabled')
            deleted = is_valid_tag(reference) and await self.meta.delete_tag(
                name, reference)
        if not deleted:
            raise await self._manifest_unknown(name, reference)

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

    async def _manifest_unknown(self, name: str, reference: str,
                                invalid: str | None = None) -> RegistryError:
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
        if not await self.meta.repo_exists(name):
            return RegistryError(ErrorCode.NAME_UNKNOWN, detail={'name': name})
        return RegistryError(
            ErrorCode.MANIFEST_UNKNOWN, detail={'reference': reference[:200]}
        )

    # -- listings (end-8, end-12, catalog) -------------------------------------------

    async def list_tags(self, name: str, last: str | None, n: int) -> Page[str]:
        tags = await self.meta.tags(name, last, n + 1)
        if tags is None:
            raise RegistryError(ErrorCode.NAME_UNKNOWN, detail={'name': name})
        tags = tags if n else []
        return Page(tags[:n], len(tags) > n)

    async def catalog(self, last: str | None, n: int,
                      readable: Callable[[str], bool] | None = None) -> Page[str]:
        """A page of repository names; with ``readable``, only those (still exactly
        ``n`` when there are that many, so pagination stays right)."""
        if not n:
            return Page([], False)
        names = await self.meta.repositories(last, n + 1, readable)
        return Page(names[:n], len(names) > n)

    async def referrers(
        self, name: str, digest: str, artifact_type: str | None, last: str | None,
        n: int,
    ) -> Page[Referrer]:
        d = Digest.parse(digest)
        entries = await self.meta.referrers(name, str(d), artifact_type, last, n + 1)
        return Page(entries[:n], len(entries) > n)


def _blobs_unknown(missing: list[str]) -> RegistryError:
    """§Push: one MANIFEST_BLOB_UNKNOWN per missing digest. The subject is never
    checked (§Pushing Manifests with Subject)."""
    return RegistryError.of(
        [
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
            for d in missing
        ]
    )


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
