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

Migrations run once at startup (``oci-ref serve`` applies them before its workers
start; each store applies what is missing when it opens the file).
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

DB_FILE = 'oci-ref.db'
migrations = Migrations('oci-ref')


@migrations()
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


@migrations()
def m002_locks(db: Database) -> None:
    # Replaces flock on files: locks live where every process (and later every
    # replica, as PostgreSQL advisory locks) sees them.
    db.table('locks').create(
        {'name': str, 'owner': str, 'exclusive': int, 'pid': int, 'expires_at': float},
        pk=('name', 'owner'),
    )
    db.table('uploads').add_column('hash_state', bytes)


@migrations()
def m003_blob_spools(db: Database) -> None:
    # The S3 blob store's spool state lives beside the session rows: found again by
    # id (and by the purge), never by listing the bucket (issue 14).
    db.table('blob_spools').create({'id': str, 'state': bytes, 'updated_at': float},
                                   pk='id', not_null={'state'})


@migrations()
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


__all__ = ['DB_FILE', 'migrations']
