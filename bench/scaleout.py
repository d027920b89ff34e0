"""Issue 14's column: two oci-ref replicas, metadata in PostgreSQL and blobs in S3,
behind haproxy round-robin (no stickiness), measured beside the single-node default.

The engines are the ones the tests start (tests/engines.py: a throw-away PostgreSQL
cluster, moto in server mode, haproxy), so the bench and the tests share one starter
for each; the replicas are the bench's own ``Server`` (bench/servers.py), so
``--oci-ref-rev`` applies to them too. Imported only when the column is measured:
the engines need the test extras (psycopg, moto, boto3, pytest).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

from bench.metrics import descendants
from bench.plan import HTTP_TIMEOUT, OCI, SCALE
from bench.servers import Server

REPLICAS = 2
# What the column needs besides the venv's oci-ref: Python packages of the test
# extras and Debian's PostgreSQL and haproxy (`make engines`).
MODULES = ('pytest', 'psycopg', 'moto', 'boto3', 'aiobotocore')


def missing() -> str | None:
    """Why the column cannot be measured here, or None."""
    absent = [m for m in MODULES if importlib.util.find_spec(m) is None]
    if absent:
        return f'Python packages {", ".join(absent)} (pip install -e ".[test]")'
    from tests import engines

    if engines.postgres_bindir() is None:
        return 'PostgreSQL (initdb, postgres): make engines'
    if shutil.which('haproxy', path=os.pathsep.join(
            ['/usr/sbin', '/usr/bin', os.environ.get('PATH', '')])) is None:
        return 'haproxy: make engines'
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam(engines.TEST_USER)
        except KeyError:
            return (f'system user {engines.TEST_USER} (PostgreSQL refuses root): '
                    'make engines')
    return None


class Replicas:
    """The engines and ``count`` replicas on them; ``port`` is haproxy's. Measured
    like one server: ``pid_groups`` gives each replica's process tree (the peak RSS
    is the largest replica's), ``pids`` all of them (their CPU is summed)."""

    label = SCALE
    workers = 1

    def __init__(self, workdir: Path, exe: str, env: dict[str, str],
                 count: int = REPLICAS):
        self.workdir = workdir
        self.exe = exe
        self.env = env
        self.count = count
        self.replicas: list[Server] = []
        self.engines: list[Any] = []
        self.lb: Any = None
        self.port = 0

    def start(self) -> None:
        from tests.engines import (
            HAProxy,
            MotoServer,
            PostgresServer,
            postgres_bindir,
            run_as_user,
        )

        try:
            bindir = postgres_bindir()
            assert bindir is not None
            pg = PostgresServer(bindir, run_as_user())
            self.engines.append(pg)
            s3 = MotoServer()
            self.engines.append(s3)
            _, url = pg.create_database('oci_ref_bench')
            bucket = s3.bucket('oci-ref-bench')
            # The URL carries a password: by environment, never in argv.
            env = {**self.env, **bucket.env, 'OCI_REF_METADATA_STORE': url}
            # moto joins a multipart upload's parts in Python when it completes: for
            # 1 GiB that takes longer than the default 30 s a real S3 never needs.
            args = ('--blob-store', 's3', '--s3-bucket', bucket.bucket,
                    '--s3-endpoint-url', bucket.endpoint_url, '--s3-region',
                    bucket.region, '--s3-path-style', '--s3-timeout',
                    str(int(HTTP_TIMEOUT)))
            for i in range(self.count):
                r = Server(OCI, 1, self.workdir, self.exe, env, args=args,
                           name=f'{SCALE} r{i}')
                self.replicas.append(r)
                r.start()
            # Health checks once a second: the load they add stays out of the figures.
            self.lb = HAProxy([f'http://127.0.0.1:{r.port}' for r in self.replicas],
                              check_interval_ms=1000)
            self.engines.append(self.lb)
            for i in range(self.count):
                self.lb.wait_state(i, 'UP')
            self.port = self.lb.port
        except BaseException:
            self.stop()
            raise

    def pids(self) -> list[int]:
        """The replicas and the engines: the server CPU of this column is the
        whole system's (PostgreSQL, S3 and haproxy work for every request)."""
        engines = [p for e in self.engines if e.proc is not None
                   for p in descendants(e.proc.pid)]
        return [p for r in self.replicas for p in r.pids()] + engines

    def pid_groups(self) -> list[list[int]]:
        return [r.pids() for r in self.replicas]

    def stop(self) -> None:
        """Replicas first (they hold connections to the engines), then haproxy, S3,
        PostgreSQL; each engine removes its temporary directory."""
        for r in self.replicas:
            r.stop()
        for e in reversed(self.engines):
            with contextlib.suppress(Exception):
                e.close()
        self.engines.clear()

    def delete_data(self) -> None:
        for r in self.replicas:
            r.delete_data()
