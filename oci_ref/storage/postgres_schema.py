"""The shared metadata store's schema: PostgreSQL, one database per registry.

The tables mirror ``sqlite_schema.py`` (the same names, columns and meaning), so both
stores answer alike::

    repositories(name PK, created_at)       a repository exists once something was
                                            pushed or mounted; gc drops empty ones
    blobs(digest PK, size, created_at)      every verified object in the blob store
    repo_blobs(repo, digest, created_at)    which repository may see which blob;
      PK (repo, digest), INDEX (digest)     a push or mount renews created_at
    manifests(repo, digest, media_type,     manifests byte for byte (bytea); subject,
      size, content, subject,               artifact_type and annotations (JSON text,
      artifact_type, annotations,           as sent) are what end-12 lists
      created_at) PK (repo, digest)
    manifest_refs(repo, digest, child)      what each manifest references (for GC
      PK (repo, digest, child),             and eviction: is a blob referenced from
      INDEX (repo, child), INDEX (child)    any repository; version 5)
    tags(repo, tag, digest, updated_at)     case-sensitive
      PK (repo, tag), INDEX (repo, digest)
    uploads(id PK, repo, size, algorithm,   open upload sessions: every replica
      started_at, updated_at, hash_state)   continues from here
    locks(name, owner, exclusive, holder,   leases: reader-writer locks shared by
      expires_at) PK (name, owner)          every replica (postgres.py); ``holder``
                                            is the taking process's presence key
    blob_spools(id PK, state, updated_at)   a scale-out blob store's per-spool state
                                            (S3 multipart upload, parts, hash); opaque
    signing_keys(name PK, key, created_at)  secrets every replica signs with,
                                            made once: 'token', 'ui-csrf', 'blob-redirect'
    login_failures(client, at)              failed logins in the last minute, per
      INDEX (client, at), INDEX (at)        client address: one budget, all replicas
    cache_tags(repo, tag, digest,           pull-through cache: when a cached tag
      validated_at) PK (repo, tag)          was last checked upstream (version 4)
    cache_fetches(key PK, owner, spool,     pull-through cache: the one download of
      size, written, heartbeat, holder)     a blob, shared by every replica; holder
                                            is the owner's presence key, as in locks
    cache_used(repo, digest, used_at)       pull-through cache: when a cached manifest
      PK (repo, digest)                     was last served (eviction's LRU order)
    oci_ref_schema(version PK, applied_at)  the migrations applied

Every name, tag, digest and id column is ``COLLATE "C"``: byte order, as SQLite's
BINARY collation sorts them, whatever locale the cluster was made with (tag and
catalog pagination depend on it). Times are seconds since the epoch (double
precision), from the store's injected clock, except lease expiry, which uses the
server's clock (one clock for every replica).

Migrations run at start, in one transaction that first takes
``pg_advisory_xact_lock``: replicas starting at once apply each step exactly once,
the others wait and find it done.
"""

from __future__ import annotations

from typing import Any

# pg_advisory_xact_lock(MIGRATION_LOCK, 0): held while migrating.
LOCK_SPACE = 0x0C1_2EF  # the first key of every advisory lock this store takes
MIGRATION_LOCK = 1
TAKE_LOCK = 2       # (LOCK_SPACE, hashtext(name)) serialises takers of one lock
PRESENCE = 3        # (LOCK_SPACE + PRESENCE, key): held by a live process
UPLOAD_CAP = 4      # serialises session creation while a cap applies

_C = 'text COLLATE "C"'
# What GC's sweep and the cache's eviction lock against writers for their one
# transaction (postgres.py, postgres_evict.py).
CONTENT_TABLES = 'repositories, blobs, repo_blobs, manifests, manifest_refs, tags'

MIGRATIONS: list[tuple[int, list[str]]] = [
    (1, [
        f'CREATE TABLE repositories (name {_C} PRIMARY KEY, '
        'created_at double precision NOT NULL)',
        f'CREATE TABLE blobs (digest {_C} PRIMARY KEY, size bigint NOT NULL, '
        'created_at double precision NOT NULL)',
        f'CREATE TABLE repo_blobs (repo {_C} NOT NULL, digest {_C} NOT NULL, '
        'created_at double precision NOT NULL, PRIMARY KEY (repo, digest))',
        'CREATE INDEX repo_blobs_digest ON repo_blobs (digest)',
        f'CREATE TABLE manifests (repo {_C} NOT NULL, digest {_C} NOT NULL, '
        'media_type text NOT NULL, size bigint NOT NULL, content bytea NOT NULL, '
        f'subject {_C}, artifact_type text, annotations text, '
        'created_at double precision NOT NULL, PRIMARY KEY (repo, digest))',
        'CREATE INDEX manifests_subject ON manifests (repo, subject, digest)',
        f'CREATE TABLE manifest_refs (repo {_C} NOT NULL, digest {_C} NOT NULL, '
        f'child {_C} NOT NULL, PRIMARY KEY (repo, digest, child))',
        'CREATE INDEX manifest_refs_child ON manifest_refs (repo, child)',
        f'CREATE TABLE tags (repo {_C} NOT NULL, tag {_C} NOT NULL, '
        f'digest {_C} NOT NULL, updated_at double precision NOT NULL, '
        'PRIMARY KEY (repo, tag))',
        'CREATE INDEX tags_digest ON tags (repo, digest)',
        f'CREATE TABLE uploads (id {_C} PRIMARY KEY, repo {_C} NOT NULL, '
        'size bigint NOT NULL, algorithm text, started_at double precision NOT NULL, '
        'updated_at double precision NOT NULL, hash_state bytea)',
        f'CREATE TABLE locks (name {_C} NOT NULL, owner {_C} NOT NULL, '
        'exclusive boolean NOT NULL, holder bigint NOT NULL, '
        'expires_at double precision NOT NULL, PRIMARY KEY (name, owner))',
    ]),
    (2, [
        # The S3 blob store's spool state (multipart upload id, parts, resumable
        # hash): found again by id and by the purge, never by listing the bucket.
        f'CREATE TABLE blob_spools (id {_C} PRIMARY KEY, state bytea NOT NULL, '
        'updated_at double precision NOT NULL)',
    ]),
    (3, [
        # What every replica must agree on (issue 14): the token signing key (was
        # <root>/.token-key on each replica) and the failed-login budget (was per
        # process: N replicas let N times the attempts through).
        f'CREATE TABLE signing_keys (name {_C} PRIMARY KEY, key bytea NOT NULL, '
        'created_at double precision NOT NULL)',
        f'CREATE TABLE login_failures (client {_C} NOT NULL, '
        'at double precision NOT NULL)',
        'CREATE INDEX login_failures_client ON login_failures (client, at)',
        'CREATE INDEX login_failures_at ON login_failures (at)',
    ]),
    (4, [
        # Pull-through cache (oci_ref/upstream/cache.py, fetches.py), as in SQLite's
        # m004: every replica sees one cache, so a tag is validated and a blob
        # downloaded once for all of them (issue 14: cache state in shared stores).
        f'CREATE TABLE cache_tags (repo {_C} NOT NULL, tag {_C} NOT NULL, '
        f'digest {_C} NOT NULL, validated_at double precision NOT NULL, '
        'PRIMARY KEY (repo, tag))',
        f'CREATE TABLE cache_fetches (key {_C} PRIMARY KEY, owner {_C} NOT NULL, '
        f'spool {_C} NOT NULL, size bigint, written bigint NOT NULL, '
        'heartbeat double precision NOT NULL, holder bigint NOT NULL)',
        f'CREATE TABLE cache_used (repo {_C} NOT NULL, digest {_C} NOT NULL, '
        'used_at double precision NOT NULL, PRIMARY KEY (repo, digest))',
    ]),
    (5, [
        # Cache eviction (postgres_evict.py, issue 13): a blob row goes only when no
        # manifest in any repository references it; (repo, child) cannot answer
        # that without a scan per blob (SQLite's m001 has this index).
        'CREATE INDEX manifest_refs_by_child ON manifest_refs (child)',
    ]),
]


async def migrate(conn: Any) -> list[int]:
    """Apply the missing migrations on ``conn`` (an AsyncConnection, autocommit),
    each step once however many replicas start together; the versions applied."""
    applied: list[int] = []
    async with conn.transaction():
        await conn.execute('SELECT pg_advisory_xact_lock(%s, %s)',
                           [LOCK_SPACE, MIGRATION_LOCK])
        await conn.execute('CREATE TABLE IF NOT EXISTS oci_ref_schema '
                           '(version integer PRIMARY KEY, '
                           'applied_at timestamptz NOT NULL DEFAULT now())')
        cur = await conn.execute('SELECT COALESCE(max(version), 0) FROM oci_ref_schema')
        row = await cur.fetchone()
        current = int(row[0]) if row else 0
        for version, statements in MIGRATIONS:
            if version <= current:
                continue
            for sql in statements:
                await conn.execute(sql)
            await conn.execute('INSERT INTO oci_ref_schema (version) VALUES (%s)',
                               [version])
            applied.append(version)
    return applied


__all__ = ['CONTENT_TABLES', 'LOCK_SPACE', 'MIGRATIONS', 'migrate']
