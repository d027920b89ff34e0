"""The registry service: every distribution-spec operation, without HTTP.

It orchestrates a blob store (bytes) and a metadata store (everything else), both
given to it (see ``oci_ref.storage``), and raises RegistryError with the spec's
codes; the api/ resources only translate HTTP to calls here and results back to
headers. Every operation that touches storage is a coroutine and awaits the stores,
which do their blocking work off the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from oci_ref.config import Config
from oci_ref.errors import ErrorCode, ErrorEntry, RegistryError
from oci_ref.manifest import MAX_REPORTED, parse_manifest
from oci_ref.reference import (
    TAG_RULE,
    Digest,
    digest_problem,
    is_digest_reference,
    is_valid_tag,
)
from oci_ref.storage.interfaces import (
    BlobMissing,
    BlobStore,
    Clock,
    ManifestRecord,
    MetadataStore,
    Referrer,
)
from oci_ref.uploads import (
    GC_LOCK,
    HASHER_CACHE_SIZE,
    SESSION_ID_RE,
    ContentRange,
    UploadOperations,
    upload_location,
    upload_range,
)

if TYPE_CHECKING:
    from hashlib import _Hash

# end-7b: the spec asks registries to accept at least 10 ?tag= values; past our
# limit the spec's answer is 414.
MAX_TAGS_PER_PUT = 100
# Manifests larger than this are validated in a thread (see put_manifest).
PARSE_INLINE_MAX = 64 * 1024


def blob_location(name: str, digest: Digest | str) -> str:
    return f'/v2/{name}/blobs/{digest}'


def manifest_location(name: str, digest: Digest | str) -> str:
    return f'/v2/{name}/manifests/{digest}'


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


class Registry(UploadOperations):
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

    @property
    def chunk_min_length(self) -> int:
        """The chunk size uploads work best with (0: any size)."""
        return self.blobs.chunk_min_length

    async def blob_redirect(self, digest: Digest) -> str | None:
        """A short-lived URL to send the client to instead (presigned S3), or None."""
        return await self.blobs.redirect_url(digest)

    async def delete_blob(self, name: str, digest: str) -> None:
        self._allowed(self.policy.delete_blobs, 'blob deletes are disabled')
        d = Digest.parse(digest)
        if not await self.meta.unlink_blob(name, str(d)):
            raise RegistryError(ErrorCode.BLOB_UNKNOWN, detail={'digest': str(d)})

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
            actual = await _hash(body, digest.algorithm)
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
            digest = await _hash(body)
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


async def _hash(body: bytes, algorithm: str = 'sha256') -> Digest:
    """A manifest's digest; a large body is hashed in a thread, off the event loop
    (a small one costs less than the hop)."""
    if len(body) > PARSE_INLINE_MAX:
        return await asyncio.to_thread(Digest.of, body, algorithm)
    return Digest.of(body, algorithm)


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


__all__ = ['GC_LOCK', 'HASHER_CACHE_SIZE', 'SESSION_ID_RE', 'ContentRange', 'Page',
           'Policy', 'PushedManifest', 'Registry', 'blob_location', 'manifest_location',
           'upload_location', 'upload_range']
