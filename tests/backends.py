"""Store combinations for storage-behaviour tests, and a clock tests move by hand.

``backend`` (a fixture in tests/conftest.py) is parametrized over :data:`BACKENDS`;
a test that takes it runs once per combination. Adding the scale-out pair is one
entry here plus its :class:`Backend` subclass (how to start the engines, and how a
test looks behind the interfaces to fake a crash or an old timestamp).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from oci_ref.config import Config
from oci_ref.reference import Digest
from oci_ref.registry import Policy, Registry
from oci_ref.storage import open_stores


class FakeClock:
    """Injected as the registry's and the metadata store's clock."""

    def __init__(self, now: float | None = None):
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Backend:
    """One store combination over a fresh root."""

    id = 'sqlite+filesystem'
    chunk_min_length: str | None = None  # the OCI-Chunk-Min-Length advertised

    def __init__(self, root: Path):
        self.root = root
        self.clock = FakeClock()

    @classmethod
    def create(cls, request: Any, root: Path) -> Backend:
        """Built by the ``backend`` fixture; a subclass requests its engines here
        (lazily: only tests on that combination start them)."""
        return cls(root)

    def config(self, **settings: Any) -> Config:
        settings.setdefault('fsync', False)
        return Config(root=self.root, metadata_store='sqlite', blob_store='fs',
                      **settings)

    def registry(self, *, clock: bool = False, **settings: Any) -> Registry:
        """A Registry on these stores; with ``clock``, on :attr:`clock`."""
        config = self.config(**settings)
        kw = {'clock': self.clock} if clock else {}
        stores = open_stores(config, **kw)
        return Registry(stores.blobs, stores.meta, policy=Policy.from_config(config), **kw)

    # -- behind the interfaces (tests only) -------------------------------------------

    @contextmanager
    def db(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.root / 'oci-ref.db', isolation_level=None)
        try:
            yield conn
        finally:
            conn.close()

    def blob_path(self, digest: str) -> Path:
        d = Digest.parse(digest)
        return self.root / 'blobs' / d.algorithm / d.encoded[:2] / d.encoded

    def spool_path(self, session_id: str) -> Path:
        return self.root / 'uploads' / session_id

    def age_blob(self, digest: str, seconds: float) -> None:
        path = self.blob_path(digest)
        st = path.stat()
        os.utime(path, (st.st_atime - seconds, st.st_mtime - seconds))

    def quarantined_manifest(self, name: str) -> Path:
        return self.root / 'quarantine' / 'manifests' / name

    def touch_spool(self, session_id: str, when: float) -> None:
        """Make a spool look last written at ``when`` (a crash long ago)."""
        os.utime(self.spool_path(session_id), (when, when))

    def blob_files(self) -> list[str]:
        found = []
        for path in sorted((self.root / 'blobs').glob('*/*/*')):
            found.append(f'{path.parent.parent.name}:{path.name}')
        return found

    def age(self, seconds: float) -> None:
        """Make everything stored so far ``seconds`` older: rows and blob files."""
        with self.db() as db:
            db.execute('BEGIN IMMEDIATE')
            for table in ('blobs', 'repo_blobs', 'manifests'):
                db.execute(f'UPDATE {table} SET created_at = created_at - ?', [seconds])
            db.execute('COMMIT')
        for path in (self.root / 'blobs').glob('*/*/*'):
            st = path.stat()
            os.utime(path, (st.st_atime - seconds, st.st_mtime - seconds))

    @contextmanager
    def write_lock_held(self) -> Iterator[None]:
        """Hold the metadata store's write lock from outside (as another process's
        long transaction would)."""
        with self.db() as db:
            db.execute('BEGIN IMMEDIATE')
            try:
                yield
            finally:
                db.execute('ROLLBACK')


from tests.s3_backend import S3Backend  # noqa: E402 - it subclasses Backend

# 'postgresql+s3' joins here with its Backend subclass.
BACKENDS: dict[str, type[Backend]] = {'sqlite+filesystem': Backend,
                                      'sqlite+s3': S3Backend}
