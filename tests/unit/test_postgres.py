"""What only the PostgreSQL metadata store has to get right (issue 14): replicas
migrating at once, a dead process's locks, an unreachable server. Everything else it
shares with SQLite is tested through the ``backend`` fixture (tests/backends.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from oci_ref.app import create_app
from oci_ref.config import Config, ConfigError
from oci_ref.storage.interfaces import SessionBusy, StoreUnavailable
from oci_ref.testing import free_port
from tests.backends import PostgresBackend
from tests.engines import PostgresServer
from tests.support import InProcess, assert_error

pytestmark = pytest.mark.engines


def open_store(url: str, **kw: object) -> object:
    from oci_ref.storage.postgres import PostgresMetadataStore

    return PostgresMetadataStore(url, **kw)  # type: ignore[arg-type]


def test_replicas_starting_at_once_migrate_once(postgres_url: str) -> None:
    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: open_store(postgres_url), range(4)))
    for store in stores:
        store.close()  # type: ignore[attr-defined]
    import psycopg

    with psycopg.connect(postgres_url) as conn:
        from oci_ref.storage.postgres_schema import MIGRATIONS

        versions = conn.execute('SELECT version FROM oci_ref_schema '
                                'ORDER BY version').fetchall()
        assert versions == [(v,) for v, _ in MIGRATIONS]  # each applied once
        assert conn.execute("SELECT to_regclass('locks')::text").fetchone() == ('locks',)


def test_a_database_of_an_earlier_version_is_brought_up_to_date(postgres_url: str
                                                                 ) -> None:
    """A database at version 4 (before cache eviction) gets version 5, the index
    eviction asks "does any manifest reference this blob" with, and keeps its rows."""
    import psycopg

    from oci_ref.storage.postgres_schema import MIGRATIONS

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute('CREATE TABLE oci_ref_schema (version integer PRIMARY KEY, '
                     'applied_at timestamptz NOT NULL DEFAULT now())')
        for version, statements in MIGRATIONS[:4]:
            for sql in statements:
                conn.execute(sql)
            conn.execute('INSERT INTO oci_ref_schema (version) VALUES (%s)', [version])
        conn.execute("INSERT INTO manifest_refs VALUES ('up/a', 'sha256:m', 'sha256:c')")
    open_store(postgres_url).close()  # type: ignore[attr-defined]
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute('SELECT max(version) FROM oci_ref_schema').fetchone() == (5,)
        assert conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = "
                            "'manifest_refs_by_child'").fetchone()[0].endswith('(child)')
        assert conn.execute('SELECT repo FROM manifest_refs WHERE child = '
                            "'sha256:c'").fetchall() == [('up/a',)]


def test_an_unreachable_server_at_start_is_store_unavailable() -> None:
    url = f'postgresql://nobody@127.0.0.1:{free_port()}/nothing'
    with pytest.raises(StoreUnavailable) as caught:
        open_store(url)
    assert caught.value.store == 'metadata (postgresql)'
    assert 'refused' in caught.value.reason.lower() or 'failed' in caught.value.reason


def test_connections_refused_mid_life_give_503_naming_the_store_then_recover(
        postgres_server: PostgresServer, postgres_metadata_url: str,
        tmp_path: Path) -> None:
    backend = PostgresBackend(tmp_path / 'data', postgres_metadata_url)
    registry = backend.registry(busy_timeout_ms=500)
    c = InProcess(create_app(backend.config(busy_timeout_ms=500), registry=registry))
    name = postgres_metadata_url.rsplit('/', 1)[1]
    try:
        assert_error(c.get('/v2/a/b/tags/list'), 404, 'NAME_UNKNOWN')
        with postgres_server.connect() as admin:
            admin.execute(f'ALTER DATABASE {name} CONNECTION LIMIT 0')
            admin.execute('SELECT pg_terminate_backend(pid) FROM pg_stat_activity '
                          'WHERE datname = %s', [name])
        error = assert_error(c.get('/v2/a/b/tags/list'), 503, 'UNAVAILABLE')
        assert 'metadata (postgresql)' in str(error)
        ready = c.get('/readyz')
        assert ready.status_code == 503, ready.content
        assert b'database not reachable' in ready.content, ready.content
        with postgres_server.connect() as admin:
            admin.execute(f'ALTER DATABASE {name} CONNECTION LIMIT -1')
        statuses = [c.get('/v2/a/b/tags/list').status_code for _ in range(12)]
        # Connections lost with the server are replaced: at most one try each.
        assert statuses[-1] == 404 and set(statuses) <= {503, 404}, statuses
    finally:
        registry.close()


HOLDER = textwrap.dedent('''
    import asyncio, sys
    from oci_ref.storage.postgres import PostgresMetadataStore

    async def main():
        store = PostgresMetadataStore(sys.argv[1])
        assert await store.create_upload('s1', 'a/b', None)
        async with store.claim_upload('s1'):
            print('claimed', flush=True)
            await asyncio.sleep(3600)

    asyncio.run(main())
''')


def test_a_claim_held_by_a_killed_process_is_free_at_once(postgres_metadata_url: str
                                                           ) -> None:
    """A replica killed with SIGKILL mid-PATCH: its lease has 30 s to run, but its
    presence went with its connection, so the next claim on any replica succeeds."""
    proc = subprocess.Popen([sys.executable, '-c', HOLDER, postgres_metadata_url],
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, 'PYTHONPATH': os.getcwd()})
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == 'claimed'
        store = open_store(postgres_metadata_url)

        async def claim() -> str:
            try:
                async with store.claim_upload('s1') as held:  # type: ignore[attr-defined]
                    return 'claimed' if held.upload is not None else 'gone'
            except SessionBusy:
                return 'busy'

        assert asyncio.run(claim()) == 'busy'  # its holder is alive
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # The server notices the closed connection at once; poll the claim (the
        # event we wait on) rather than sleep.
        outcome = 'busy'
        for _ in range(250):
            outcome = asyncio.run(claim())
            if outcome != 'busy':
                break
        assert outcome == 'claimed'

        store.close()  # type: ignore[attr-defined]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_url_goes_to_workers_in_the_secrets_file(tmp_path: Path) -> None:
    url = 'postgresql://app:s3cret@db.example/registry'
    with pytest.raises(ConfigError) as caught:
        Config(root=tmp_path, metadata_store='mysql://app:s3cret@db/x').validated()
    assert 's3cret' not in str(caught.value)
    with pytest.raises(ConfigError):
        Config(root=tmp_path, metadata_store=url, metadata_pool=0).validated()
    config = Config(root=tmp_path, metadata_store=url).validated()
    environ: dict[str, str] = {'OCI_REF_METADATA_STORE': url}
    secrets = config.hand_to_workers(environ)
    try:
        assert secrets is not None and 's3cret' in secrets.read_text()
        assert not any('s3cret' in v for v in environ.values())
        assert Config.from_env(environ).metadata_store == url
    finally:
        if secrets is not None:
            secrets.unlink()


def test_tags_and_names_sort_bytewise_whatever_the_database_collation(
        postgres_server: PostgresServer) -> None:
    """Tag and catalog pages follow byte order (as SQLite's BINARY collation),
    also in a database whose default collation is a linguistic one (ICU en-US,
    where 'a' < 'B'): the schema's columns are COLLATE "C"."""
    import psycopg

    name = 'test_icu_collation'
    try:
        with postgres_server.connect() as admin:
            admin.execute(f'CREATE DATABASE {name} OWNER {postgres_server.APP_ROLE} '
                          "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' "
                          "LOCALE 'C'")
    except psycopg.errors.FeatureNotSupported:
        pytest.skip('this PostgreSQL was built without ICU')
    url = postgres_server._url(postgres_server.APP_ROLE, postgres_server.password, name)
    try:
        with psycopg.connect(url) as conn:  # the database really sorts linguistically
            assert conn.execute("SELECT 'a' < 'B'").fetchone() == (True,)
        store = open_store(url)

        async def scenario() -> tuple[list[str] | None, list[str]]:
            for repo in ('b/x', 'B/x', 'a/x', 'A/x'):
                assert await store.put_manifest(  # type: ignore[attr-defined]
                    repo, 'sha256:' + 'a' * 64, 'application/json', b'{}',
                    subject=None, artifact_type=None, annotations=None, blobs=[],
                    children=[], tags=['b', 'B', 'a', 'A', '_z', 'Z0']) == []
            tags = await store.tags('a/x', None, 10)  # type: ignore[attr-defined]
            return tags, await store.repositories(None, 10)  # type: ignore[attr-defined]

        try:
            tags, repos = asyncio.run(scenario())
        finally:
            store.close()  # type: ignore[attr-defined]
        assert tags == ['A', 'B', 'Z0', '_z', 'a', 'b']
        assert repos == ['A/x', 'B/x', 'a/x', 'b/x']
    finally:
        postgres_server.drop_database(name)
