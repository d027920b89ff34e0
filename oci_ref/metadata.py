"""Registry metadata in SQLite (WAL) through sqlite-utils.

Tables (created by the migrations below; the bytes of blobs live in blobstore.py):

- ``repositories(name)``: a repository exists once something was pushed or mounted.
- ``blobs(digest, size)``: every verified file in the content-addressed tree.
- ``repo_blobs(repo, digest)``: which repository may see which blob. Blobs are
  repository-scoped (a blob is visible in B only after a push or mount into B).
- ``manifests(repo, digest, media_type, size, content, subject, artifact_type,
  annotations)``: manifests byte for byte; ``subject``/``artifact_type``/
  ``annotations`` are what the referrers API (end-12) lists.
- ``manifest_refs(repo, digest, child)``: what each manifest references (for GC).
- ``tags(repo, tag, digest)``: case-sensitive tags; BINARY collation = ASCII order.
- ``uploads(id, repo, size, algorithm)``: open upload sessions; the state is here and
  in the spool file, never in process memory, so any worker can serve any request.

Each method is synchronous and does its writes inside one ``atomic()`` block with no
``await`` inside, so concurrent coroutines never join each other's transactions.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations('oci-ref')


@migrations()
def m001_initial(db: Database) -> None:
    db['repositories'].create({'name': str, 'created_at': float}, pk='name')
    db['blobs'].create({'digest': str, 'size': int, 'created_at': float}, pk='digest')
    db['repo_blobs'].create(
        {'repo': str, 'digest': str, 'created_at': float}, pk=('repo', 'digest')
    )
    db['repo_blobs'].create_index(['digest'])
    db['manifests'].create(
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
    db['manifests'].create_index(['repo', 'subject', 'digest'])
    db['manifest_refs'].create(
        {'repo': str, 'digest': str, 'child': str}, pk=('repo', 'digest', 'child')
    )
    db['manifest_refs'].create_index(['child'])
    db['tags'].create(
        {'repo': str, 'tag': str, 'digest': str, 'updated_at': float},
        pk=('repo', 'tag'),
        not_null={'digest'},
    )
    db['tags'].create_index(['repo', 'digest'])
    db['uploads'].create(
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


@dataclass(frozen=True, slots=True)
class Upload:
    id: str
    repo: str
    size: int
    algorithm: str | None
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class ManifestRecord:
    digest: str
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
class TagDetail:
    tag: str
    digest: str
    pushed_at: float
    media_type: str
    size: int
    content: bytes


class Metadata:
    def __init__(self, path: Path):
        # One connection per process, used only from the event loop's thread.
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db = Database(conn)
        self.db.execute('PRAGMA journal_mode=WAL')
        # WAL + NORMAL: a killed process loses no committed transaction.
        self.db.execute('PRAGMA synchronous=NORMAL')
        self.db.execute('PRAGMA busy_timeout=10000')
        migrations.apply(self.db)

    def close(self) -> None:
        self.db.close()

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.db.execute(sql, params).fetchone()

    # -- repositories and blobs --------------------------------------------------

    def repo_exists(self, repo: str) -> bool:
        return self._one('SELECT 1 FROM repositories WHERE name = ?', [repo]) is not None

    def _ensure_repo(self, repo: str, now: float) -> None:
        self.db.execute(
            'INSERT OR IGNORE INTO repositories (name, created_at) VALUES (?, ?)',
            [repo, now],
        )

    def link_blob(self, repo: str, digest: str, size: int) -> None:
        now = time.time()
        with self.db.atomic():
            self._ensure_repo(repo, now)
            self.db.execute(
                'INSERT OR IGNORE INTO blobs (digest, size, created_at) VALUES (?, ?, ?)',
                [digest, size, now],
            )
            # A push or mount renews the link: GC's grace counts from the last one.
            self.db.execute(
                'INSERT INTO repo_blobs (repo, digest, created_at) VALUES (?, ?, ?) '
                'ON CONFLICT (repo, digest) DO UPDATE SET created_at = excluded.created_at',
                [repo, digest, now],
            )

    def blob_size(self, repo: str, digest: str) -> int | None:
        row = self._one(
            'SELECT b.size FROM repo_blobs r JOIN blobs b ON b.digest = r.digest '
            'WHERE r.repo = ? AND r.digest = ?',
            [repo, digest],
        )
        return None if row is None else int(row[0])

    def blob_repos(self, digest: str) -> list[str]:
        """Repositories that link ``digest`` (for mounts without ``from``)."""
        rows = self.db.execute(
            'SELECT repo FROM repo_blobs WHERE digest = ? ORDER BY repo', [digest]
        )
        return [r[0] for r in rows]

    def global_blob_size(self, digest: str) -> int | None:
        row = self._one('SELECT size FROM blobs WHERE digest = ?', [digest])
        return None if row is None else int(row[0])

    def unlink_blob(self, repo: str, digest: str) -> bool:
        with self.db.atomic():
            cur = self.db.execute(
                'DELETE FROM repo_blobs WHERE repo = ? AND digest = ?', [repo, digest]
            )
        return cur.rowcount > 0

    def missing_blobs(self, repo: str, digests: Iterable[str]) -> list[str]:
        return self._missing('repo_blobs', repo, list(dict.fromkeys(digests)))

    def missing_children(self, repo: str, digests: Iterable[str]) -> list[str]:
        """Index children must exist in ``repo`` as manifests or as blobs."""
        missing = self.missing_blobs(repo, digests)
        return self._missing('manifests', repo, missing) if missing else []

    def _missing(self, table: str, repo: str, wanted: list[str]) -> list[str]:
        """Which of ``wanted`` have no row in ``table`` for ``repo``, in order.
        Queried in slices: SQLite caps the number of bound parameters."""
        have: set[str] = set()
        for i in range(0, len(wanted), 500):
            part = wanted[i:i + 500]
            have.update(
                r[0]
                for r in self.db.execute(
                    f'SELECT digest FROM {table} WHERE repo = ? AND digest IN '
                    f'({",".join("?" * len(part))})',
                    [repo, *part],
                )
            )
        return [d for d in wanted if d not in have]

    # -- upload sessions ---------------------------------------------------------

    def create_upload(self, session_id: str, repo: str, algorithm: str | None) -> None:
        now = time.time()
        self.db.execute(
            'INSERT INTO uploads (id, repo, size, algorithm, started_at, updated_at) '
            'VALUES (?, ?, 0, ?, ?, ?)',
            [session_id, repo, algorithm, now, now],
        )

    def get_upload(self, session_id: str) -> Upload | None:
        row = self._one(
            'SELECT id, repo, size, algorithm, updated_at FROM uploads WHERE id = ?',
            [session_id],
        )
        return None if row is None else Upload(*row)

    def count_uploads(self) -> int:
        return int(self._one('SELECT COUNT(*) FROM uploads')[0])

    def upload_ids(self) -> set[str]:
        return {r[0] for r in self.db.execute('SELECT id FROM uploads')}

    def expire_uploads(self, idle_before: float) -> list[str]:
        """Delete the sessions idle since before ``idle_before``; return their ids."""
        with self.db.atomic():
            ids = [r[0] for r in self.db.execute(
                'SELECT id FROM uploads WHERE updated_at < ?', [idle_before])]
            self.db.execute('DELETE FROM uploads WHERE updated_at < ?', [idle_before])
        return ids

    def set_upload_size(self, session_id: str, size: int) -> None:
        self.db.execute(
            'UPDATE uploads SET size = ?, updated_at = ? WHERE id = ?',
            [size, time.time(), session_id],
        )

    def delete_upload(self, session_id: str) -> bool:
        cur = self.db.execute('DELETE FROM uploads WHERE id = ?', [session_id])
        return cur.rowcount > 0

    def finish_upload(self, session_id: str, repo: str, digest: str, size: int) -> None:
        """Link the committed blob and close the session in one transaction."""
        with self.db.atomic():
            self.link_blob(repo, digest, size)
            self.db.execute('DELETE FROM uploads WHERE id = ?', [session_id])

    # -- manifests and tags ------------------------------------------------------

    @contextmanager
    def immediate(self, *, commit: bool = True) -> Iterator[None]:
        """A write transaction that takes SQLite's write lock at once (BEGIN
        IMMEDIATE), so what it reads cannot change before it writes: the
        manifest-PUT check and GC's sweep serialise instead of interleaving.
        ``commit=False`` rolls back at the end (a dry run)."""
        self.db.execute('BEGIN IMMEDIATE')
        try:
            yield
        except BaseException:
            self.db.execute('ROLLBACK')
            raise
        self.db.execute('COMMIT' if commit else 'ROLLBACK')

    def put_manifest(
        self,
        repo: str,
        digest: str,
        media_type: str,
        content: bytes,
        *,
        subject: str | None,
        artifact_type: str | None,
        annotations: dict[str, str] | None,
        blobs: Sequence[str],
        children: Sequence[str],
        tags: Sequence[str],
        sparse: bool = False,
    ) -> list[str]:
        """Store a manifest if everything it references is here (or ``sparse``);
        else return the missing digests and store nothing. Check and write are one
        transaction."""
        now = time.time()
        with self.immediate():
            missing = [] if sparse else self.missing_blobs(
                repo, blobs) + self.missing_children(repo, children)
            if missing:
                return missing
            refs = [*blobs, *children]
            self._ensure_repo(repo, now)
            self.db.execute(
                'INSERT INTO manifests (repo, digest, media_type, size, content, '
                'subject, artifact_type, annotations, created_at) '
                'VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) '
                'ON CONFLICT (repo, digest) DO UPDATE SET media_type = excluded.media_type',
                [
                    repo,
                    digest,
                    media_type,
                    len(content),
                    content,
                    subject,
                    artifact_type,
                    None if annotations is None else json.dumps(annotations),
                    now,
                ],
            )
            self.db.conn.executemany(
                'INSERT OR IGNORE INTO manifest_refs (repo, digest, child) '
                'VALUES (?, ?, ?)',
                [(repo, digest, child) for child in dict.fromkeys(refs)],
            )
            self.db.conn.executemany(
                'INSERT INTO tags (repo, tag, digest, updated_at) VALUES (?, ?, ?, ?) '
                'ON CONFLICT (repo, tag) DO UPDATE SET digest = excluded.digest, '
                'updated_at = excluded.updated_at',
                [(repo, tag, digest, now) for tag in tags],
            )
        return []

    def get_manifest(self, repo: str, digest: str) -> ManifestRecord | None:
        row = self._one(
            'SELECT digest, media_type, size, content FROM manifests '
            'WHERE repo = ? AND digest = ?',
            [repo, digest],
        )
        return None if row is None else ManifestRecord(*row)

    def get_tagged_manifest(self, repo: str, tag: str) -> ManifestRecord | None:
        row = self._one(
            'SELECT m.digest, m.media_type, m.size, m.content FROM tags t '
            'JOIN manifests m ON m.repo = t.repo AND m.digest = t.digest '
            'WHERE t.repo = ? AND t.tag = ?',
            [repo, tag],
        )
        return None if row is None else ManifestRecord(*row)

    def manifest_exists(self, repo: str, digest: str) -> bool:
        row = self._one(
            'SELECT 1 FROM manifests WHERE repo = ? AND digest = ?', [repo, digest]
        )
        return row is not None

    def delete_manifest(self, repo: str, digest: str) -> bool:
        """Delete by digest: the manifest and every tag pointing at it (spec §Deleting)."""
        with self.db.atomic():
            cur = self.db.execute(
                'DELETE FROM manifests WHERE repo = ? AND digest = ?', [repo, digest]
            )
            if cur.rowcount:
                self.db.execute(
                    'DELETE FROM tags WHERE repo = ? AND digest = ?', [repo, digest]
                )
                self.db.execute(
                    'DELETE FROM manifest_refs WHERE repo = ? AND digest = ?',
                    [repo, digest],
                )
        return cur.rowcount > 0

    def delete_tag(self, repo: str, tag: str) -> bool:
        cur = self.db.execute('DELETE FROM tags WHERE repo = ? AND tag = ?', [repo, tag])
        return cur.rowcount > 0

    # -- listings ----------------------------------------------------------------

    def tags(self, repo: str, last: str | None, limit: int) -> list[str]:
        rows = self.db.execute(
            'SELECT tag FROM tags WHERE repo = ? AND tag > ? ORDER BY tag LIMIT ?',
            [repo, last or '', limit],
        )
        return [r[0] for r in rows]

    def repositories(self, last: str | None, limit: int) -> list[str]:
        rows = self.db.execute(
            'SELECT name FROM repositories WHERE name > ? ORDER BY name LIMIT ?',
            [last or '', limit],
        )
        return [r[0] for r in rows]

    def referrers(
        self, repo: str, subject: str, artifact_type: str | None, last: str | None,
        limit: int,
    ) -> list[Referrer]:
        sql = (
            'SELECT digest, media_type, size, artifact_type, annotations FROM manifests '
            'WHERE repo = ? AND subject = ? AND digest > ?'
        )
        params: list[Any] = [repo, subject, last or '']
        if artifact_type is not None:
            sql += ' AND artifact_type = ?'
            params.append(artifact_type)
        sql += ' ORDER BY digest LIMIT ?'
        params.append(limit)
        return [
            Referrer(d, mt, size, at, None if ann is None else json.loads(ann))
            for d, mt, size, at, ann in self.db.execute(sql, params)
        ]

    # -- views for the web UI (oci_ref/ui/model.py) ---------------------------------

    def tag_count(self, repo: str) -> int:
        return int(self._one('SELECT COUNT(*) FROM tags WHERE repo = ?', [repo])[0])

    def tag_details(self, repo: str, *, by_pushed: bool, descending: bool, offset: int,
                    limit: int) -> list[TagDetail]:
        """A page of tags with what they point at, sorted by name or push time (ties
        by name, so the order is stable across pages)."""
        direction = 'DESC' if descending else 'ASC'
        order = (f't.updated_at {direction}, t.tag {direction}' if by_pushed
                 else f't.tag {direction}')
        rows = self.db.execute(
            'SELECT t.tag, t.digest, t.updated_at, m.media_type, m.size, m.content '
            'FROM tags t JOIN manifests m ON m.repo = t.repo AND m.digest = t.digest '
            f'WHERE t.repo = ? ORDER BY {order} LIMIT ? OFFSET ?',
            [repo, limit, offset],
        )
        return [TagDetail(*row) for row in rows]

    def tags_of(self, repo: str, digest: str) -> list[tuple[str, float]]:
        """The tags pointing at ``digest`` and when each was pushed."""
        rows = self.db.execute(
            'SELECT tag, updated_at FROM tags WHERE repo = ? AND digest = ? ORDER BY tag',
            [repo, digest],
        )
        return [(r[0], float(r[1] or 0)) for r in rows]

    def tags_with_prefix(self, repo: str, prefix: str, limit: int) -> list[str]:
        """Tags starting with ``prefix`` (the referrers tag schema, ``sha256-<hex>``)."""
        rows = self.db.execute(
            'SELECT tag FROM tags WHERE repo = ? AND tag >= ? AND substr(tag, 1, ?) = ? '
            'ORDER BY tag LIMIT ?',
            [repo, prefix, len(prefix), prefix, limit],
        )
        return [r[0] for r in rows]

    def repository_stats(self, repos: Sequence[str]) -> dict[str, tuple[int, int]]:
        """{repository: (tag count, bytes of the blobs it links)} for ``repos``."""
        stats = {r: (0, 0) for r in repos}
        for i in range(0, len(repos), 500):
            part = list(repos[i:i + 500])
            marks = ','.join('?' * len(part))
            sizes = dict(self.db.execute(
                'SELECT r.repo, SUM(b.size) FROM repo_blobs r JOIN blobs b '
                f'ON b.digest = r.digest WHERE r.repo IN ({marks}) GROUP BY r.repo', part))
            for repo, count in self.db.execute(
                    f'SELECT repo, COUNT(*) FROM tags WHERE repo IN ({marks}) '
                    'GROUP BY repo', part):
                stats[repo] = (int(count), 0)
            for repo, size in sizes.items():
                stats[repo] = (stats[repo][0], int(size or 0))
        return stats

    def manifest_pushed_at(self, repo: str, digest: str) -> float | None:
        row = self._one('SELECT created_at FROM manifests WHERE repo = ? AND digest = ?',
                        [repo, digest])
        return None if row is None else float(row[0] or 0)
