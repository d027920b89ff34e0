"""The ``sqlite+s3`` store combination for storage-behaviour tests: SQLite metadata,
blobs in a fresh bucket on the session's moto S3 server (tests/engines.py).

What tests look at behind the interfaces maps onto the bucket: a blob "path" is its
object, a spool "path" is its state row (and pending pieces). What S3 cannot do
(set an object's LastModified) is a skip naming why, raised by the hook a test
calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from oci_ref.config import Config
from oci_ref.reference import Digest
from tests.backends import Backend


class S3Object:
    """The part of ``pathlib.Path`` tests use on a blob file, on an S3 object."""

    def __init__(self, backend: S3Backend, key: str):
        self.backend = backend
        self.key = key

    @property
    def parent(self) -> S3Object:
        return S3Object(self.backend, self.key.rpartition('/')[0])

    def __truediv__(self, leaf: str) -> S3Object:
        return S3Object(self.backend, f'{self.key}/{leaf}')

    def mkdir(self, **_: Any) -> None:
        pass  # keys need no directories

    def _s3(self) -> Any:
        return self.backend.s3()

    def exists(self) -> bool:
        try:
            self._s3().head_object(Bucket=self.backend.bucket.bucket, Key=self.key)
        except self._s3().exceptions.ClientError:
            return False
        return True

    is_file = exists

    def read_bytes(self) -> bytes:
        r = self._s3().get_object(Bucket=self.backend.bucket.bucket, Key=self.key)
        return r['Body'].read()

    def write_bytes(self, data: bytes) -> None:
        self._s3().put_object(Bucket=self.backend.bucket.bucket, Key=self.key, Body=data)

    def unlink(self, missing_ok: bool = False) -> None:
        self._s3().delete_object(Bucket=self.backend.bucket.bucket, Key=self.key)


class S3Spool:
    """A spool as tests see it: its state row in the metadata store."""

    def __init__(self, backend: S3Backend, spool_id: str):
        self.backend = backend
        self.id = spool_id

    def exists(self) -> bool:
        with self.backend.db() as db:
            return db.execute('SELECT 1 FROM blob_spools WHERE id = ?',
                              [self.id]).fetchone() is not None

    is_file = exists

    def write_bytes(self, data: bytes) -> None:
        """What a crash leaves: a state row and a pending piece, no session."""
        from oci_ref.storage.s3_spools import fresh_state

        key = f'uploads/{self.id}/p0'
        S3Object(self.backend, key).write_bytes(data)
        state = fresh_state()
        state.size, state.seq, state.pending = len(data), 1, [(key, len(data), len(data))]
        with self.backend.db() as db:
            db.execute('INSERT OR REPLACE INTO blob_spools (id, state, updated_at) '
                       'VALUES (?, ?, ?)', [self.id, state.dump(), self.backend.clock()])


class S3Backend(Backend):
    id = 'sqlite+s3'
    chunk_min_length = str(5 * 1024 * 1024)

    def __init__(self, root: Path, bucket: Any = None):
        super().__init__(root)
        self.bucket = bucket
        self._client: Any = None

    @classmethod
    def create(cls, request: Any, root: Path) -> Backend:
        bucket = request.getfixturevalue('s3_bucket')
        monkeypatch = request.getfixturevalue('monkeypatch')
        for name, value in bucket.env.items():  # credentials: the standard chain
            monkeypatch.setenv(name, value)
        return cls(root, bucket)

    def config(self, **settings: Any) -> Config:
        settings.setdefault('fsync', False)
        settings.setdefault('s3_timeout', 5.0)
        return Config(root=self.root, metadata_store='sqlite', blob_store='s3',
                      s3_bucket=self.bucket.bucket,
                      s3_endpoint_url=self.bucket.endpoint_url,
                      s3_region=self.bucket.region, s3_path_style=True, **settings)

    def s3(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client('s3', **self.bucket.client_kwargs())
        return self._client

    # -- behind the interfaces ----------------------------------------------------

    def blob_path(self, digest: str) -> S3Object:  # type: ignore[override]
        d = Digest.parse(digest)
        return S3Object(self, f'blobs/{d.algorithm}/{d.encoded[:2]}/{d.encoded}')

    def spool_path(self, session_id: str) -> S3Spool:  # type: ignore[override]
        return S3Spool(self, session_id)

    def age_blob(self, digest: str, seconds: float) -> None:
        self.age(seconds)

    def quarantined_manifest(self, name: str) -> S3Object:  # type: ignore[override]
        return S3Object(self, f'quarantine/manifests/{name}')

    def touch_spool(self, session_id: str, when: float) -> None:
        with self.db() as db:
            db.execute('UPDATE blob_spools SET updated_at = ? WHERE id = ?',
                       [when, session_id])

    def blob_files(self) -> list[str]:
        found = []
        pages = self.s3().get_paginator('list_objects_v2').paginate(
            Bucket=self.bucket.bucket, Prefix='blobs/')
        for page in pages:
            for obj in page.get('Contents', []):
                _, algorithm, _, encoded = obj['Key'].split('/')
                found.append(f'{algorithm}:{encoded}')
        return sorted(found)

    def age(self, seconds: float) -> None:
        pytest.skip('S3 sets LastModified itself: objects cannot be made older, and '
                    'this check ages blob files (gc grace on content)')

    def multipart_uploads(self) -> list[str]:
        """Open multipart uploads in the bucket (what a leak would leave)."""
        r = self.s3().list_multipart_uploads(Bucket=self.bucket.bucket)
        return [u['Key'] for u in r.get('Uploads', [])]

    def objects(self, prefix: str = '') -> list[str]:
        r = self.s3().list_objects_v2(Bucket=self.bucket.bucket, Prefix=prefix)
        return sorted(o['Key'] for o in r.get('Contents', []))


