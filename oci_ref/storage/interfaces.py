"""The storage seam: what the HTTP-free core asks of a blob store and a metadata store.

Two interfaces, each with an embedded implementation (``filesystem.py``, ``sqlite.py``)
and room for a scale-out one (S3-compatible blobs, PostgreSQL metadata). One of each
is built at startup by :func:`oci_ref.storage.open_stores` and injected into
:class:`~oci_ref.registry.Registry`; the API resources, GC, fsck, metrics and health
checks reach storage only through these methods (no SQL, no path outside the store
modules).

The event-loop rule: every method here is ``async`` and never blocks the event loop.
An implementation runs its blocking work (SQLite calls, file reads and writes,
``fsync``, ``ftruncate``, hashing, directory scans) in a bounded thread pool, or uses
an async driver. One call is one round trip (one thread hop): methods are shaped
around what a request needs (``put_manifest`` checks and writes in one call), not
around rows.

Failures: a store that cannot answer in time (a lock held past the busy timeout, an
engine down) raises :class:`StoreUnavailable` naming itself; the app answers 503
UNAVAILABLE with ``Retry-After``, never 500. An operation that fails that way leaves
nothing behind: either its row and its spool are both there, or neither is.

Locks: what makes GC, commits and uploads safe across worker processes and replicas
is expressed through the metadata store (:meth:`MetadataStore.lock`,
:meth:`MetadataStore.claim_upload`): lease rows, taken in SQLite write transactions
here and under transaction-scoped advisory locks in PostgreSQL (postgres.py says why
not session advisory locks). Nothing relies on local file locks.
A held lock is a :class:`Lease`; a write that ends what the lock protected takes the
leases to drop with ``release=`` and drops them in its own transaction, so a blob
commit costs one round trip, not three.

State a scale-out blob store keeps per upload session (an S3 multipart upload id and
its part ETags, resumable hash state) lives in the metadata store it is given when
built, never found again by listing the bucket; :attr:`Upload.hash_state` is the slot
for a serialised hash that lets a session continue on another replica.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from hashlib import _Hash

    from oci_ref.reference import Digest

Clock = Callable[[], float]
"""Seconds since the epoch (``time.time``); injected so tests move time, not sleep."""


# -- failures ----------------------------------------------------------------------


class StoreUnavailable(Exception):
    """A store could not serve the call now (lock held past the busy timeout, engine
    unreachable, disk failure). ``store`` names it for the client and the log."""

    def __init__(self, store: str, reason: str):
        self.store = store
        self.reason = reason
        super().__init__(f'{store}: {reason}')


class SessionBusy(Exception):
    """Another request holds this upload session right now."""


class SessionMissing(Exception):
    """The session's spool is gone (cancelled, finished, or lost in a crash)."""


class BlobMissing(Exception):
    """No content under this digest."""


class BodyTooLarge(Exception):
    """The streamed body exceeded the caller's limit."""


# -- records -------------------------------------------------------------------------


@dataclass(slots=True)
class Lease:
    """A lock held through the metadata store (see :meth:`MetadataStore.lock`).
    ``released`` is set once a write dropped it (``release=``): leaving the lock's
    ``async with`` then costs nothing."""

    name: str
    owner: str
    released: bool = False


@dataclass(frozen=True, slots=True)
class Claim:
    """A request's hold on an upload session: its state read under the claim
    (None: the session is gone) and the lease to release with the last write."""

    upload: Upload | None
    lease: Lease


@dataclass(frozen=True, slots=True)
class Upload:
    """An open upload session: the state any worker (or replica) continues from."""

    id: str
    repo: str
    size: int
    algorithm: str | None
    updated_at: float = 0.0
    # Serialised streaming-hash state (None: the embedded store re-hashes at commit
    # when the hasher cached in the process does not cover the whole spool).
    hash_state: bytes | None = None


@dataclass(frozen=True, slots=True)
class ManifestRecord:
    digest: str
    media_type: str
    size: int
    content: bytes


@dataclass(frozen=True, slots=True)
class TagDetail:
    """A tag with what it points at, as the web view lists it."""

    tag: str
    digest: str
    pushed_at: float
    media_type: str
    size: int
    content: bytes


@dataclass(frozen=True, slots=True)
class Referrer:
    digest: str
    media_type: str
    size: int
    artifact_type: str | None
    annotations: dict[str, str] | None


@dataclass(frozen=True, slots=True)
class StoredManifest:
    """A manifest as fsck reads it back."""

    repo: str
    digest: str
    content: bytes


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """A content object found by scanning the blob store."""

    digest: str
    size: int
    modified: float


@dataclass(frozen=True, slots=True)
class SpoolInfo:
    """An upload spool found by scanning (session id or ``tmp-…``)."""

    id: str
    modified: float


@dataclass(frozen=True, slots=True)
class StoreStats:
    """The gauges /metrics reads at scrape time (the same in every worker)."""

    upload_sessions: int
    upload_bytes: int
    blob_bytes: int
    manifest_bytes: int
    repositories: int
    blobs: int
    manifests: int
    tags: int


@dataclass(frozen=True, slots=True)
class ManifestGraph:
    """One repository's manifests as GC's reachability walk needs them."""

    repo: str
    created: dict[str, float]            # digest -> created_at
    subjects: dict[str, str]             # digest -> subject digest
    children: dict[str, list[str]]       # digest -> referenced digests
    tagged: set[str]                     # digests some tag points at


Unreachable = Callable[[ManifestGraph, float], list[str]]
"""GC's choice: the digests of ``graph`` to delete given the cutoff."""


@dataclass
class Sweep:
    """What one GC sweep of the metadata removed (or, dry, would remove) and kept."""

    manifests: list[tuple[str, str]] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)
    blobs: list[tuple[str, int]] = field(default_factory=list)
    repositories: list[str] = field(default_factory=list)
    # Unreferenced but younger than the grace period: kept this time.
    young_links: list[tuple[str, str]] = field(default_factory=list)
    young_manifests: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CacheTag:
    """Pull-through cache: the digest a cached tag pointed at when last checked.

    ``record``: that manifest, when the store read it in the same query (SQLite:
    a cached tag within its TTL is then served with one store call, not two); None
    when it did not, or the manifest is gone (evicted)."""

    digest: str
    validated_at: float
    record: ManifestRecord | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class FetchClaim:
    """Pull-through cache: who downloads a blob into which spool, and how far."""

    owner: str
    spool: str
    size: int | None
    written: int
    heartbeat: float


@dataclass(frozen=True, slots=True)
class CachedManifest:
    """Eviction's view of one cached manifest: ``used_at`` is when it was last
    served (coarse), ``children`` what it references (blobs and manifests)."""

    repo: str
    digest: str
    size: int
    used_at: float
    children: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CachedLink:
    """Eviction's view of one cached blob link (repository -> blob)."""

    repo: str
    digest: str
    size: int
    linked_at: float


@dataclass(frozen=True, slots=True)
class EvictionPlan:
    """What to remove from one upstream's cache: manifests and blob links as
    (repo, digest); ``usage`` before, ``freed`` the bytes the cache stops holding."""

    usage: int
    freed: int
    manifests: tuple[tuple[str, str], ...] = ()
    links: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Evicted:
    """What one eviction removed; ``blobs`` (digest, size) lost their last holder:
    their rows are gone, their content is the caller's to delete."""

    usage: int
    freed: int
    manifests: list[tuple[str, str]]
    links: list[tuple[str, str]]
    blobs: list[tuple[str, int]]


# -- the interfaces --------------------------------------------------------------------


# Eviction's choice (oci_ref/upstream/evict.py:choose), as the stores call it.
Choose = Callable[[list[CachedManifest], list[CachedLink], int], EvictionPlan]


def cache_range(prefix: str) -> tuple[str, str]:
    """An upstream's cached repositories, ``<prefix>/...``, as a range of keys:
    ``lo <= repo < hi`` ('0' follows '/'; both stores sort names bytewise)."""
    return f'{prefix}/', f'{prefix}0'


class MetadataStore(Protocol):
    """Repositories, blob links, manifests, tags, referrers, upload sessions, locks.

    Each method is one atomic operation (one transaction) and one round trip.
    Timestamps come from the store's injected clock.
    """

    name: str  # e.g. 'metadata (sqlite)': named in 503s and /readyz

    def close(self) -> None: ...

    # -- repositories and blobs
    async def repo_exists(self, repo: str) -> bool: ...
    async def link_blob(self, repo: str, digest: str, size: int, *,
                        release: Sequence[Lease] = ()) -> None: ...
    async def blob_size(self, repo: str, digest: str) -> int | None: ...
    async def blob_repos(self, digest: str) -> list[str]: ...
    async def mount_blob(self, repo: str, digest: str, sources: Sequence[str], *,
                         release: Sequence[Lease] = ()) -> int | None:
        """Link ``digest`` into ``repo`` from the first source linking it; its size."""
        ...
    async def unlink_blob(self, repo: str, digest: str) -> bool: ...

    # -- upload sessions
    async def create_upload(self, session_id: str, repo: str, algorithm: str | None,
                            *, cap: int = 0) -> bool:
        """Open a session; False (nothing written) when ``cap`` sessions are open."""
        ...
    async def get_upload(self, session_id: str) -> Upload | None: ...
    def claim_upload(self, session_id: str) -> AbstractAsyncContextManager[Claim]:
        """Hold the session exclusively while a request writes to it, yielding its
        state re-read under the claim. Raises SessionBusy when another request
        holds it. Claiming and releasing reset the idle clock, and the claim keeps
        it reset while held: a claimed session is never expired."""
        ...
    async def set_upload_size(self, session_id: str, size: int,
                              hash_state: bytes | None = None, *,
                              release: Sequence[Lease] = ()) -> None: ...
    async def delete_upload(self, session_id: str) -> bool: ...
    async def finish_upload(self, session_id: str, repo: str, digest: str,
                            size: int, *, release: Sequence[Lease] = ()) -> None:
        """Link the committed blob and close the session, in one transaction."""
        ...
    async def expire_uploads(self, idle_before: float, only: str | None = None
                             ) -> list[str]:
        """Delete sessions idle since before ``idle_before`` that nobody holds
        (just ``only``, if given); return their ids."""
        ...
    async def upload_ids(self) -> set[str]: ...

    # -- a scale-out blob store's spool state (opaque to the metadata store)
    async def spool_state(self, spool_id: str) -> bytes | None: ...
    async def set_spool_state(self, spool_id: str, state: bytes) -> None:
        """Write (or replace) the state; renews its ``updated_at``."""
        ...
    async def delete_spool_state(self, spool_id: str) -> None: ...
    async def spool_states(self) -> list[tuple[str, float]]:
        """Every (spool id, updated_at): what the purge checks for leftovers."""
        ...

    # -- manifests and tags
    async def put_manifest(
        self, repo: str, digest: str, media_type: str, content: bytes, *,
        subject: str | None, artifact_type: str | None,
        annotations: dict[str, str] | None, blobs: Sequence[str],
        children: Sequence[str], tags: Sequence[str], sparse: bool = False,
    ) -> list[str]:
        """Store a manifest if everything it references is here (or ``sparse``:
        references recorded, content not required); else return the missing digests
        and store nothing. Check and write are one transaction."""
        ...
    async def get_manifest(self, repo: str, digest: str) -> ManifestRecord | None: ...
    async def get_tagged_manifest(self, repo: str, tag: str) -> ManifestRecord | None: ...
    async def delete_manifest(self, repo: str, digest: str) -> bool: ...
    async def delete_tag(self, repo: str, tag: str) -> bool: ...

    # -- listings
    async def tags(self, repo: str, last: str | None, limit: int) -> list[str] | None:
        """A page of tags; None when the repository does not exist."""
        ...
    async def repositories(self, last: str | None, limit: int,
                           readable: Callable[[str], bool] | None = None) -> list[str]:
        """Up to ``limit`` names after ``last`` that ``readable`` admits (the
        filter runs in the store's thread, over as many rows as it takes)."""
        ...
    async def referrers(self, repo: str, subject: str, artifact_type: str | None,
                        last: str | None, limit: int) -> list[Referrer]: ...

    # -- views for the web UI
    async def tag_count(self, repo: str) -> int: ...
    async def tag_details(self, repo: str, *, by_pushed: bool, descending: bool,
                          offset: int, limit: int) -> list[TagDetail]: ...
    async def tags_of(self, repo: str, digest: str) -> list[tuple[str, float]]: ...
    async def tags_with_prefix(self, repo: str, prefix: str, limit: int
                               ) -> list[str]: ...
    async def repository_stats(self, repos: Sequence[str]
                               ) -> dict[str, tuple[int, int]]: ...
    async def manifest_pushed_at(self, repo: str, digest: str) -> float | None: ...

    # -- locks, GC, fsck, operations
    def lock(self, name: str, *, exclusive: bool, wait: bool
             ) -> AbstractAsyncContextManager[Lease | None]:
        """A reader-writer lock shared by every process on this store: yields the
        Lease, or None when it was not taken (never, with ``wait``). Held locks die
        with their holder."""
        ...
    async def sweep(self, cutoff: float, *, unreachable: Unreachable | None,
                    dry_run: bool) -> Sweep:
        """GC's metadata pass, one transaction: unreachable manifests (when
        ``unreachable`` is given), unreferenced links, unlinked blobs and empty
        repositories, older than ``cutoff``. Rolled back when ``dry_run``."""
        ...
    async def blob_sizes(self) -> dict[str, int]:
        """Every blob row: digest -> recorded size."""
        ...
    def manifests(self) -> AsyncIterator[StoredManifest]:
        """Every stored manifest, in batches (fsck)."""
        ...
    async def dangling_references(self) -> list[tuple[str, str, str]]:
        """(repo, manifest, child) where the child is in neither table of repo."""
        ...
    async def forget_blob(self, digest: str) -> None: ...
    async def stats(self) -> StoreStats: ...

    # -- pull-through cache (oci_ref/upstream/cache.py): additions of issue 13
    async def cache_tag(self, repo: str, tag: str) -> CacheTag | None:
        """When ``tag`` of the cached ``repo`` was last validated upstream."""
        ...
    async def set_cache_tag(self, repo: str, tag: str, digest: str,
                            validated_at: float) -> None:
        """Record (insert or replace) a validation of a cached tag."""
        ...
    async def cache_tags_validated(self, repo: str, tags: list[str]
                                   ) -> dict[str, float]:
        """When each of ``tags`` (those the cache knows) was last validated (web view)."""
        ...
    async def claim_fetch(self, key: str, owner: str, spool: str, now: float,
                          stale_before: float) -> FetchClaim:
        """Take the download of ``key`` for ``owner`` unless another owner holds it
        with a heartbeat at or after ``stale_before``; the claim as it stands after
        (``owner`` tells who won). One transaction. A store that can tell an owner's
        process is gone (one host: SQLite) reports that claim's heartbeat as 0, so
        a crash does not hold the next download back for CLAIM_STALE."""
        ...
    async def get_fetch(self, key: str) -> FetchClaim | None: ...
    async def update_fetch(self, key: str, owner: str, written: int, size: int | None,
                           now: float) -> bool:
        """Report progress (and renew the heartbeat); False when the claim was lost."""
        ...
    async def end_fetch(self, key: str, owner: str) -> None: ...
    # eviction (oci_ref/upstream/evict.py): cached content is what lives under an
    # upstream's prefix, ``<name>/…``
    async def touch_cached(self, repo: str, digest: str, now: float) -> None:
        """Record that a cached manifest was served at ``now`` (never moves back)."""
        ...
    async def cache_usage(self, prefix: str) -> int:
        """Bytes of manifests and distinct linked blobs under ``prefix``."""
        ...
    async def evict_cached(self, prefix: str, cap: int,
                           choose: Callable[[list[CachedManifest], list[CachedLink], int],
                                            EvictionPlan]) -> Evicted:
        """Apply ``choose``'s plan in one transaction; a blob row goes only when no
        link and no kept manifest's reference holds it."""
        ...
    async def cache_counts(self, prefixes: list[str]) -> dict[str, int]:
        """cached_manifests, pushed_manifests, cached_blob_links, cached_blobs,
        pushed_blobs (fsck, metrics)."""
        ...
    async def cache_uses(self) -> list[tuple[str, str, float]]:
        """Every recorded last use: (repo, digest, used_at), sorted (oci-ref
        migrate carries eviction's order)."""
        ...

    # -- access control shared by every replica (issue 14; oci_ref/auth.py)
    async def signing_key(self, name: str, candidate: bytes | None) -> bytes | None:
        """The key stored under ``name``. With ``candidate`` and none stored yet,
        ``candidate`` is stored first: the first caller's wins and every caller,
        on any replica, gets that one. None: no key and no candidate."""
        ...
    async def failed_logins(self, client: str, window: float) -> tuple[int, float]:
        """How many failed logins ``client`` had in the last ``window`` seconds,
        and how many seconds ago the oldest of them was (0 when none). The clock
        is the store's (the server's, with PostgreSQL: one for every replica)."""
        ...
    async def count_failed_login(self, client: str, window: float) -> None:
        """Count one failed login of ``client`` now; forget every one (of any
        client) older than ``window`` seconds."""
        ...
    async def check(self) -> str:
        """'ok' when the store takes writes now; else why not (/readyz)."""
        ...


class BlobStore(Protocol):
    """Content-addressed blobs and upload spools (the bytes; sizes live in metadata)."""

    name: str  # e.g. 'blobs (filesystem)'
    # The chunk size uploads work best with (OCI-Chunk-Min-Length); 0: any.
    chunk_min_length: int

    def close(self) -> None: ...

    # -- content
    async def exists(self, digest: Digest) -> bool: ...
    async def reader(self, digest: Digest, start: int = 0, length: int | None = None
                     ) -> AsyncIterator[bytes]:
        """Open now (BlobMissing before any header is sent); yield ``length`` bytes
        from ``start`` in large chunks."""
        ...
    async def delete(self, digest: Digest) -> None: ...
    def scan(self) -> AsyncIterator[BlobInfo]:
        """Every content object (anything that is not content is skipped)."""
        ...
    async def hash(self, digest: Digest) -> str:
        """The hex digest of the stored content under ``digest``'s algorithm."""
        ...
    async def quarantine(self, digest: Digest) -> None:
        """Move corrupt content aside (fsck --repair)."""
        ...
    async def quarantine_manifest(self, repo: str, digest: str, content: bytes) -> None: ...

    # -- upload spools
    async def create_spool(self, session_id: str, *, readable: bool = False) -> None:
        """Open an empty spool; ``readable``: :meth:`spool_reader` must be able to
        read every byte appended while it grows (the pull-through cache's; a store
        may pay for that, e.g. S3 keeps such a spool in plain objects)."""
        ...
    async def spool_size(self, session_id: str) -> int | None:
        """Bytes in the spool; None when it is gone."""
        ...
    async def append(self, session_id: str, offset: int, body: AsyncIterator[bytes],
                     hashers: list[_Hash], *, limit: int | None = None) -> int:
        """Write ``body`` at ``offset`` (cutting the spool back to ``offset`` first
        and on any failure), updating ``hashers``; the bytes written. The caller
        holds the session's claim (or owns a ``tmp-`` spool)."""
        ...
    async def truncate(self, session_id: str, size: int) -> None: ...
    async def hash_spool(self, session_id: str, algorithm: str) -> str: ...
    async def commit(self, session_id: str, digest: Digest) -> None:
        """Make a verified spool visible under ``digest`` (durable first, then
        atomically); drop it when the content is already there."""
        ...
    async def discard(self, session_id: str) -> None: ...
    async def spools(self) -> list[SpoolInfo]: ...
    async def redirect_url(self, digest: Digest) -> str | None:
        """A short-lived URL a client may GET the blob from itself (a presigned S3
        URL), or None: stream it through this process."""
        ...
    async def spool_reader(self, session_id: str, start: int, length: int
                           ) -> AsyncIterator[bytes]:
        """Pull-through cache (issue 13): read back ``length`` bytes from ``start``
        of a spool another task is appending to (opened now: SessionMissing when the
        spool is gone, e.g. committed meanwhile)."""
        ...
    async def check(self) -> str:
        """'ok' when the store takes writes now; else why not (/readyz)."""
        ...


@dataclass(frozen=True, slots=True)
class Stores:
    """The pair picked at startup."""

    blobs: BlobStore
    meta: MetadataStore

    def close(self) -> None:
        self.meta.close()
        self.blobs.close()
