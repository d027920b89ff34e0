"""Storage: the blob-store and metadata-store interfaces and their implementations.

:func:`open_stores` picks the pair once, at startup, from configuration; the
composition roots (``oci_ref.app``, the ``gc``/``fsck`` commands) inject it into
:class:`~oci_ref.registry.Registry`. Embedded default: SQLite + local filesystem
(``make run`` needs no server). Scale-out: PostgreSQL metadata (``postgres.py``,
imported only when configured), S3-compatible blobs; one more branch per kind.
"""

from __future__ import annotations

import time

from oci_ref.config import POSTGRES_SCHEMES, Config
from oci_ref.storage.interfaces import (
    BlobStore,
    Clock,
    MetadataStore,
    Stores,
    StoreUnavailable,
)

METADATA_STORES = ('sqlite',)
BLOB_STORES = ('fs', 's3')


def open_stores(config: Config, *, clock: Clock = time.time) -> Stores:
    """The stores ``config`` names, ready (schema migrated, directories made)."""
    from oci_ref.storage.filesystem import FilesystemBlobStore
    from oci_ref.storage.sqlite import DB_FILE, SQLiteMetadataStore

    postgres = config.metadata_store.startswith(POSTGRES_SCHEMES)
    if config.metadata_store not in METADATA_STORES and not postgres:
        raise ValueError('unknown metadata store (sqlite or a postgresql:// URL)')
    if config.blob_store not in BLOB_STORES:
        raise ValueError(f'unknown blob store {config.blob_store!r}')
    config.root.mkdir(parents=True, exist_ok=True)
    meta: MetadataStore
    if postgres:
        # Imported only when configured: the embedded default needs no psycopg.
        from oci_ref.storage.postgres import PostgresMetadataStore

        meta = PostgresMetadataStore(
            config.metadata_store, pool_size=config.metadata_pool,
            busy_timeout_ms=config.busy_timeout_ms, clock=clock)
    else:
        meta = SQLiteMetadataStore(config.root / DB_FILE,
                                   busy_timeout_ms=config.busy_timeout_ms, clock=clock)
    blobs: BlobStore
    if config.blob_store == 's3':
        blobs = _s3_blobs(config, meta)
    else:
        blobs = FilesystemBlobStore(config.root, fsync=config.fsync)
    return Stores(blobs, meta)


def _s3_blobs(config: Config, meta: MetadataStore) -> BlobStore:
    # Imported only when configured: aiobotocore is in the `scale` extra.
    from oci_ref.storage.resumable_hash import available
    from oci_ref.storage.s3 import S3BlobStore
    from oci_ref.storage.s3_client import S3Settings

    problem = available()
    if problem is not None:
        meta.close()
        raise ValueError(f'blob_store = s3 needs resumable hashing: {problem}')
    return S3BlobStore(S3Settings.from_config(config), meta)


__all__ = ['BlobStore', 'MetadataStore', 'StoreUnavailable', 'Stores', 'open_stores']
