"""The embedded metadata store's database: ``<root>/oci-ref.db`` (SQLite, WAL).

The schema (built by the migrations below; the bytes of blobs live in the blob store)::

    repositories(name PK, created_at)       a repository exists once something was
                                            pushed or mounted; gc drops empty ones
    blobs(digest PK, size, created_at)      every verified object in the blob store
    repo_blobs(repo, digest, created_at)    which repository may see which blob
      PK (repo, digest), INDEX (digest)     (blobs are repository-scoped); a push or
                                            mount renews created_at (GC's grace)
    manifests(repo, digest, media_type,     manifests byte for byte; subject,
      size, content, subject,               artifact_type and annotations are what
      artifact_type, annotations,           the referrers API (end-12) lists
      created_at) PK (repo, digest)
    manifest_refs(repo, digest, child)      what each manifest references (for GC)
    tags(repo, tag, digest, updated_at)     case-sensitive; BINARY collation = ASCII
      PK (repo, tag)                        order, which tag listing needs
    uploads(id PK, repo, size, algorithm,   open upload sessions: the state is here
      started_at, updated_at, hash_state)   and in the spool, never in a process
    locks(name, owner, exclusive, pid,      leases: reader-writer locks shared by
      expires_at) PK (name, owner)          every process on this file (sqlite.py)
    blob_spools(id PK, state, updated_at)   a scale-out blob store's per-spool state
                                            (an S3 multipart upload id, its parts,
                                            the resumable hash); opaque bytes here
    cache_tags(repo, tag, digest,           pull-through cache: when a cached tag
      validated_at) PK (repo, tag)          was last checked at its upstream
    cache_fetches(key PK, owner, spool,     pull-through cache: the one download of
      size, written, heartbeat)             a blob every worker's clients tail
    signing_keys(name PK, key, created_at)  secrets every process signs with,
                                            made once: 'token', 'ui-csrf', 'blob-redirect'
    login_failures(client, at)              failed logins in the last minute, per
      INDEX (client, at), INDEX (at)        client address (the 429 budget)
    cache_used(repo, digest, used_at)       pull-through cache: when a cached manifest
      PK (repo, digest)                     was last served (coarse: eviction's LRU)

Migrations run once at startup (``oci-ref serve`` applies them before its workers
start; each store applies what is missing when it opens the file): :func:`migrate`.
"""

from __future__ import annotations

import datetime
import sqlite3
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlite_utils import Database

DB_FILE = 'oci-ref.db'
MIGRATION_SET = 'oci-ref'
MIGRATIONS_TABLE = '_sqlite_migrations'  # sqlite_utils' record of what was applied


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the database to the current schema.

    sqlite_utils (click, pluggy and its plugins' entry points: a third of the
    server's start, issue 17) is only imported when an existing database misses a
    migration. A database that has them all costs one query; a new one gets
    :data:`CURRENT_SCHEMA`, what the migrations build (a unit test keeps the two
    equal), recorded as sqlite_utils records them, so either path can take over.
    """
    names = [m.__name__ for m in MIGRATIONS]
    has_record = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
        (MIGRATIONS_TABLE,)).fetchone()
    if has_record:
        applied = {row[0] for row in conn.execute(
            f'SELECT name FROM {MIGRATIONS_TABLE} WHERE migration_set = ?',
            (MIGRATION_SET,))}
        if applied.issuperset(names):
            return
    else:
        conn.execute('BEGIN IMMEDIATE')  # one process creates, the others wait
        try:
            empty = conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
            ).fetchone()[0] == 0
            if empty:  # (not executescript: it would commit at once)
                for statement in CURRENT_SCHEMA:
                    conn.execute(statement)
                now = str(datetime.datetime.now(datetime.UTC))
                conn.executemany(
                    f'INSERT INTO {MIGRATIONS_TABLE} (migration_set, name, applied_at)'
                    ' VALUES (?, ?, ?)', [(MIGRATION_SET, n, now) for n in names])
            conn.execute('COMMIT')
        except BaseException:
            conn.execute('ROLLBACK')
            raise
        if empty:
            return
    _migrations().apply(_database(conn))


def _database(conn: sqlite3.Connection) -> Database:
    from sqlite_utils import Database

    return Database(conn)


def _migrations() -> Any:
    from sqlite_utils.migrations import Migrations

    migrations = Migrations(MIGRATION_SET)
    for fn in MIGRATIONS:
        migrations()(fn)
    return migrations



def m001_initial(db: Database) -> None:
    db.table('repositories').create({'name': str, 'created_at': float}, pk='name')
    db.table('blobs').create({'digest': str, 'size': int, 'created_at': float}, pk='digest')
    db.table('repo_blobs').create(
        {'repo': str, 'digest': str, 'created_at': float}, pk=('repo', 'digest')
    )
    db.table('repo_blobs').create_index(['digest'])
    db.table('manifests').create(
        {
            'repo': str,
            'digest': str,
            'media_type': str,
            'size': int,
            'content': bytes,
            'subject': str,
            'artifact_type': str,
            'annotations': str,
            'created_at': float,
        },
        pk=('repo', 'digest'),
        not_null={'media_type', 'size', 'content'},
    )
    db.table('manifests').create_index(['repo', 'subject', 'digest'])
    db.table('manifest_refs').create(
        {'repo': str, 'digest': str, 'child': str}, pk=('repo', 'digest', 'child')
    )
    db.table('manifest_refs').create_index(['child'])
    db.table('tags').create(
        {'repo': str, 'tag': str, 'digest': str, 'updated_at': float},
        pk=('repo', 'tag'),
        not_null={'digest'},
    )
    db.table('tags').create_index(['repo', 'digest'])
    db.table('uploads').create(
        {
            'id': str,
            'repo': str,
            'size': int,
            'algorithm': str,
            'started_at': float,
            'updated_at': float,
        },
        pk='id',
        not_null={'repo', 'size'},
    )


def m002_locks(db: Database) -> None:
    # Replaces flock on files: locks live where every process (and later every
    # replica, as PostgreSQL advisory locks) sees them.
    db.table('locks').create(
        {'name': str, 'owner': str, 'exclusive': int, 'pid': int, 'expires_at': float},
        pk=('name', 'owner'),
    )
    db.table('uploads').add_column('hash_state', bytes)


def m003_blob_spools(db: Database) -> None:
    # The S3 blob store's spool state lives beside the session rows: found again by
    # id (and by the purge), never by listing the bucket (issue 14).
    db.table('blob_spools').create({'id': str, 'state': bytes, 'updated_at': float},
                                   pk='id', not_null={'state'})


def m004_cache_tags(db: Database) -> None:
    # Pull-through cache (oci_ref/upstream/cache.py): a tag is served from the cache
    # while younger than its upstream's tag_ttl, then revalidated by one HEAD.
    db.table('cache_tags').create(
        {'repo': str, 'tag': str, 'digest': str, 'validated_at': float},
        pk=('repo', 'tag'), not_null={'digest'},
    )
    # One download per blob across worker processes: the claim's owner writes the
    # spool and reports its progress here; the others tail the spool.
    db.table('cache_fetches').create(
        {'key': str, 'owner': str, 'spool': str, 'size': int, 'written': int,
         'heartbeat': float},
        pk='key', not_null={'owner', 'spool', 'written', 'heartbeat'},
    )


def m005_shared_auth(db: Database) -> None:
    # What every worker and replica must agree on (issue 14): the token signing key
    # (was <root>/.token-key, imported at start) and the failed-login budget (was
    # counted per process, so N processes let N times the attempts through).
    db.table('signing_keys').create({'name': str, 'key': bytes, 'created_at': float},
                                    pk='name', not_null={'key'})
    db.table('login_failures').create({'client': str, 'at': float},
                                      not_null={'client', 'at'})
    db.table('login_failures').create_index(['client', 'at'])
    db.table('login_failures').create_index(['at'])


def m006_cache_used(db: Database) -> None:
    # Eviction (oci_ref/upstream/evict.py) is least-recently-used: when a cached
    # manifest was last served, written at most once a cache_touch_interval. A
    # manifest without a row counts as used when it was fetched (created_at).
    db.table('cache_used').create(
        {'repo': str, 'digest': str, 'used_at': float},
        pk=('repo', 'digest'), not_null={'used_at'},
    )


MIGRATIONS = (m001_initial, m002_locks, m003_blob_spools, m004_cache_tags,
              m005_shared_auth, m006_cache_used)

# What MIGRATIONS build on an empty database, as sqlite_utils writes it (tests/unit/
# test_startup.py checks they agree). A new migration changes both.
CURRENT_SCHEMA = (
    'CREATE TABLE "_sqlite_migrations" ("id" INTEGER PRIMARY KEY, "migration_set" TEXT,'
    ' "name" TEXT, "applied_at" TEXT)',
    'CREATE UNIQUE INDEX "idx__sqlite_migrations_migration_set_name"'
    ' ON "_sqlite_migrations" ("migration_set", "name")',
    'CREATE TABLE "repositories" ("name" TEXT PRIMARY KEY, "created_at" REAL)',
    'CREATE TABLE "blobs" ("digest" TEXT PRIMARY KEY, "size" INTEGER, "created_at" REAL)',
    'CREATE TABLE "repo_blobs" ("repo" TEXT, "digest" TEXT, "created_at" REAL,'
    ' PRIMARY KEY ("repo", "digest"))',
    'CREATE INDEX "idx_repo_blobs_digest" ON "repo_blobs" ("digest")',
    'CREATE TABLE "manifests" ("repo" TEXT, "digest" TEXT, "media_type" TEXT NOT NULL,'
    ' "size" INTEGER NOT NULL, "content" BLOB NOT NULL, "subject" TEXT,'
    ' "artifact_type" TEXT, "annotations" TEXT, "created_at" REAL,'
    ' PRIMARY KEY ("repo", "digest"))',
    'CREATE INDEX "idx_manifests_repo_subject_digest"'
    ' ON "manifests" ("repo", "subject", "digest")',
    'CREATE TABLE "manifest_refs" ("repo" TEXT, "digest" TEXT, "child" TEXT,'
    ' PRIMARY KEY ("repo", "digest", "child"))',
    'CREATE INDEX "idx_manifest_refs_child" ON "manifest_refs" ("child")',
    'CREATE TABLE "tags" ("repo" TEXT, "tag" TEXT, "digest" TEXT NOT NULL,'
    ' "updated_at" REAL, PRIMARY KEY ("repo", "tag"))',
    'CREATE INDEX "idx_tags_repo_digest" ON "tags" ("repo", "digest")',
    'CREATE TABLE "uploads" ("id" TEXT PRIMARY KEY, "repo" TEXT NOT NULL,'
    ' "size" INTEGER NOT NULL, "algorithm" TEXT, "started_at" REAL,'
    ' "updated_at" REAL, "hash_state" BLOB)',
    'CREATE TABLE "locks" ("name" TEXT, "owner" TEXT, "exclusive" INTEGER,'
    ' "pid" INTEGER, "expires_at" REAL, PRIMARY KEY ("name", "owner"))',
    'CREATE TABLE "blob_spools" ("id" TEXT PRIMARY KEY, "state" BLOB NOT NULL,'
    ' "updated_at" REAL)',
    'CREATE TABLE "cache_tags" ("repo" TEXT, "tag" TEXT, "digest" TEXT NOT NULL,'
    ' "validated_at" REAL, PRIMARY KEY ("repo", "tag"))',
    'CREATE TABLE "cache_fetches" ("key" TEXT PRIMARY KEY, "owner" TEXT NOT NULL,'
    ' "spool" TEXT NOT NULL, "size" INTEGER, "written" INTEGER NOT NULL,'
    ' "heartbeat" REAL NOT NULL)',
    'CREATE TABLE "signing_keys" ("name" TEXT PRIMARY KEY, "key" BLOB NOT NULL,'
    ' "created_at" REAL)',
    'CREATE TABLE "login_failures" ("client" TEXT NOT NULL, "at" REAL NOT NULL)',
    'CREATE INDEX "idx_login_failures_client_at" ON "login_failures" ("client", "at")',
    'CREATE INDEX "idx_login_failures_at" ON "login_failures" ("at")',
    'CREATE TABLE "cache_used" ("repo" TEXT, "digest" TEXT, "used_at" REAL NOT NULL,'
    ' PRIMARY KEY ("repo", "digest"))',
)

__all__ = ['CURRENT_SCHEMA', 'DB_FILE', 'MIGRATIONS', 'migrate']
