"""What the server's start costs (issue 17): modules the first request does not need
stay out of it, and a new database gets the schema the migrations build."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from oci_ref.storage import sqlite_schema
from oci_ref.storage.sqlite_schema import MIGRATIONS, migrate

# Imported where they are used, never by building the app with the default config:
# each is a visible share of startup time or RSS (bench figure 1).
LAZY = (
    'jsonschema', 'referencing',            # manifest validation: first manifest PUT
    'prometheus_client',                    # metrics: after the first exchange
    'jinja2', 'oci_ref.ui.app',             # the web view: first /ui request
    'oci_ref.lint',                         # serve --lint
    'httpx', 'oci_ref.upstream.client',     # pull-through, webhooks
    'bcrypt', 'jwt', 'cryptography',        # auth: only with htpasswd / token
    'sqlite_utils',                         # migrations an old database misses
    'aiobotocore', 'botocore', 'psycopg',   # the scale-out stores, when configured
    'tomllib',                              # only with a settings or access file
    'decimal', 'importlib.resources',       # manifests: first validation
    'oci_ref.faults', 'oci_ref.variations',  # only with --faults / --variations
    'oci_ref.upstream.config',              # only with upstreams
)

_PROBE = '''
import json, os, sys
from pathlib import Path
import oci_ref.cli, oci_ref.protocol
from oci_ref.app import create_app
from oci_ref.config import Config
# As `oci-ref serve` and its worker do: load, hand over by environment, load again.
Config.load({'root': Path(sys.argv[1])}, {}, None).hand_to_workers(os.environ)
app = create_app(Config.from_env())
from oci_ref.syntax import _compiled
print(json.dumps([sorted(sys.modules), _compiled.cache_info().currsize]))
'''


def test_building_the_app_imports_none_of_the_lazy_modules(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, '-c', _PROBE, str(tmp_path)], check=True,
                         capture_output=True, text=True).stdout
    modules, regexes = json.loads(out)
    loaded = set(modules)
    # falcon, uvicorn's pieces and the stores are needed: the probe really ran.
    assert {'falcon', 'oci_ref.app', 'oci_ref.storage.sqlite'} <= loaded
    eager = sorted(m for m in loaded if any(m == lazy or m.startswith(lazy + '.')
                                            for lazy in LAZY))
    assert eager == []
    assert regexes == 0  # the manifest grammars (oci_ref/syntax.py): first manifest


def _structure(conn: sqlite3.Connection) -> dict[str, Any]:
    """Tables, columns, keys and indexes: what a query sees, not the SQL text."""
    found: dict[str, Any] = {}
    objects = conn.execute("SELECT type, name, tbl_name FROM sqlite_master"
                           " WHERE name NOT LIKE 'sqlite_%'").fetchall()
    for kind, name, table in objects:
        if kind == 'table':
            columns = conn.execute(f'PRAGMA table_xinfo("{name}")')
            found[name] = [tuple(r) for r in columns]
        else:
            unique = [r[2] for r in conn.execute(f'PRAGMA index_list("{table}")')
                      if r[1] == name]
            columns = conn.execute(f'PRAGMA index_xinfo("{name}")')
            found[name] = (table, unique, [tuple(r) for r in columns])
    return found


def _by_sqlite_utils(conn: sqlite3.Connection, upto: int | None = None) -> None:
    from sqlite_utils import Database
    from sqlite_utils.migrations import Migrations

    migrations = Migrations(sqlite_schema.MIGRATION_SET)
    for fn in MIGRATIONS[:upto]:
        migrations()(fn)
    migrations.apply(Database(conn))


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def test_a_new_database_gets_what_the_migrations_build(tmp_path: Path) -> None:
    fast, slow = _connect(tmp_path / 'fast.db'), _connect(tmp_path / 'slow.db')
    migrate(fast)
    _by_sqlite_utils(slow)
    assert _structure(fast) == _structure(slow)
    recorded = 'SELECT migration_set, name FROM _sqlite_migrations ORDER BY id'
    assert list(fast.execute(recorded)) == list(slow.execute(recorded))
    assert [r[1] for r in fast.execute(recorded)] == [m.__name__ for m in MIGRATIONS]


@pytest.mark.parametrize('done', range(1, len(MIGRATIONS)))
def test_an_older_database_gets_the_missing_migrations(tmp_path: Path, done: int) -> None:
    old, new = _connect(tmp_path / 'old.db'), _connect(tmp_path / 'new.db')
    _by_sqlite_utils(old, upto=done)
    old.execute("INSERT INTO repositories (name, created_at) VALUES ('kept', 1.0)")
    migrate(old)
    migrate(new)
    assert _structure(old) == _structure(new)
    assert list(old.execute('SELECT name FROM repositories')) == [('kept',)]


def test_migrating_a_current_database_changes_nothing(tmp_path: Path) -> None:
    conn = _connect(tmp_path / 'db')
    migrate(conn)
    before = (_structure(conn), list(conn.execute('SELECT * FROM _sqlite_migrations')))
    migrate(conn)
    assert (_structure(conn), list(conn.execute('SELECT * FROM _sqlite_migrations'))) \
        == before


_METRICS_PROBE = '''
import sys
from pathlib import Path
import falcon.testing
from oci_ref.app import create_app
from oci_ref.config import Config
client = falcon.testing.TestClient(create_app(Config(root=Path(sys.argv[1]))))
for _ in range(3):
    assert client.simulate_get('/v2/').status_code == 200
print(client.simulate_get('/metrics').text)
'''


def test_exchanges_answered_before_the_metrics_exist_are_counted(tmp_path: Path) -> None:
    """The metrics are built in a thread after the first exchange; the exchanges
    answered meanwhile (here each on its own event loop) wait and are counted."""
    out = subprocess.run([sys.executable, '-c', _METRICS_PROBE, str(tmp_path)],
                         check=True, capture_output=True, text=True).stdout
    assert 'oci_ref_requests_total{endpoint="end-1",method="GET",status="200"} 3.0' in out


def test_a_registry_started_without_bytecode_writing_caches_it_aside(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PYTHONDONTWRITEBYTECODE made every fixture start compile oci_ref again (issue
    17): the server gets a cache of its own instead, and the sources stay clean."""
    from oci_ref.testing import OCIRegistry

    monkeypatch.delenv('PYTHONPYCACHEPREFIX', raising=False)
    cache = tmp_path / 'cache'
    env = {'PYTHONDONTWRITEBYTECODE': '1', 'XDG_CACHE_HOME': str(cache)}
    with OCIRegistry(tmp_path / 'data', env=env) as registry:
        environ = Path(f'/proc/{registry.process.pid}/environ').read_bytes().split(b'\0')
        assert f'PYTHONPYCACHEPREFIX={cache}/oci-ref/pycache'.encode() in environ
        assert not any(e.startswith(b'PYTHONDONTWRITEBYTECODE=') for e in environ)
        package = Path(sys.modules['oci_ref'].__file__ or '').parent
        cached = cache / 'oci-ref' / 'pycache' / package.relative_to('/')
        assert list(cached.glob('cli.*.pyc'))


@pytest.mark.parametrize('env, expected', [
    ({'HOME': '/h'}, {'HOME': '/h'}),  # writes bytecode as usual
    ({'HOME': '/h', 'PYTHONDONTWRITEBYTECODE': '1', 'PYTHONPYCACHEPREFIX': '/p'},
     {'HOME': '/h', 'PYTHONDONTWRITEBYTECODE': '1', 'PYTHONPYCACHEPREFIX': '/p'}),
    ({'HOME': '/h', 'PYTHONDONTWRITEBYTECODE': '1'},
     {'HOME': '/h', 'PYTHONPYCACHEPREFIX': '/h/.cache/oci-ref/pycache'}),
    ({'PYTHONDONTWRITEBYTECODE': '1'}, {'PYTHONDONTWRITEBYTECODE': '1'}),  # no home
])
def test_bytecode_cache_respects_what_is_set(env: dict[str, str],
                                             expected: dict[str, str]) -> None:
    from oci_ref.testing import bytecode_cache

    assert bytecode_cache(env) == expected


def test_opening_a_store_leaves_its_wal_to_the_first_writes(tmp_path: Path) -> None:
    """The migrating connection stays open: closing the only one would checkpoint
    and delete the WAL (two fdatasyncs per start of a new database, issue 17),
    which the first write then creates again. Closing the store still does."""
    from oci_ref.storage.sqlite import SQLiteMetadataStore

    path = tmp_path / 'oci-ref.db'
    store = SQLiteMetadataStore(path)
    wal = path.with_name(path.name + '-wal')
    try:
        assert wal.exists()
    finally:
        store.close()
    assert not wal.exists()
    with sqlite3.connect(path) as conn:  # and what the migration wrote is there
        assert conn.execute('SELECT count(*) FROM _sqlite_migrations').fetchone()[0] \
            == len(MIGRATIONS)
