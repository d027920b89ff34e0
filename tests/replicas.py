"""Replicas of `oci-ref serve` on shared stores behind haproxy: the one starter (issue 14).

- ``Replicas``: ``count`` servers on one metadata store (PostgreSQL) and one blob
  store (a shared root, or S3) behind a round-robin haproxy without stickiness. It has
  the attributes of a single ``OCIRegistry`` that tests, clients and the conformance
  runner read (``url``, ``host``, ``port``, ``log``), so anything written against one
  server runs through replicas unchanged; ``logs`` holds every replica's log.
- ``ReplicaSets``: makes ``Replicas`` on given engines, each set with a fresh database
  (and a fresh bucket with S3 blobs), dropped when the set stops.
- ``standalone``: starts the engines themselves (PostgreSQL, moto) outside pytest,
  for ``conformance/run.py --replicas N`` (``make conformance REPLICAS=2``).

The tests get the engines from the session fixtures of tests/engines.py instead.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from oci_ref.testing import OCIRegistry
from tests.engines import HAProxy, MotoServer, PostgresServer, S3Bucket

LoadBalancer = Callable[[Sequence[str]], HAProxy]
BLOB_STORES = ('s3', 'fs')


def s3_settings(bucket: S3Bucket) -> tuple[dict[str, str], dict[str, Any]]:
    """(environment, `oci-ref serve` settings) for blobs in ``bucket``; credentials
    by environment, as AWS_* (never in argv)."""
    return bucket.env, {'blob_store': 's3', 's3_bucket': bucket.bucket,
                        's3_endpoint_url': bucket.endpoint_url,
                        's3_region': bucket.region, 's3_path_style': True}


class Replicas:
    """``count`` replicas over ``url`` (metadata) and ``root`` behind haproxy, started
    at once (so they migrate a fresh database together). ``each`` adds settings per
    replica (``each[i]`` for replica ``i``: online GC on one only, say; ``root``
    there gives that replica a root of its own)."""

    def __init__(self, root: Path, url: str, load_balancer: LoadBalancer = HAProxy,
                 count: int = 2, env: dict[str, str] | None = None,
                 each: Sequence[dict[str, Any]] = (), ready_timeout: float = 90.0,
                 **settings: Any):
        # By environment, not flag: the URL may carry a password (never in argv).
        env = {**(env or {}), 'OCI_REF_METADATA_STORE': url}
        self.env, self.settings = env, settings
        extra = [dict(each[i]) if i < len(each) else {} for i in range(count)]
        roots = [Path(e.pop('root', root)) for e in extra]
        with ThreadPoolExecutor(count) as pool:
            # Generous: replicas start together, often beside other runs, and the
            # first migrates the database while the others wait for its lock.
            futures = [pool.submit(OCIRegistry, roots[i], env=env,
                                   ready_timeout=ready_timeout, **settings, **extra[i])
                       for i in range(count)]
        self.servers = [f.result() for f in futures if f.exception() is None]
        self.lb: HAProxy | None = None
        if len(self.servers) < count:
            self.stop()
            raise next(f.exception() for f in futures if f.exception() is not None)
        try:
            self.lb = load_balancer([s.url for s in self.servers])
        except BaseException:
            self.stop()
            raise
        self.root, self.roots = root, roots
        self.port = self.lb.port
        self.url, self.host = self.lb.url, f'127.0.0.1:{self.lb.port}'
        self.log = self.servers[0].log
        self.logs = [s.log for s in self.servers]

    def __enter__(self) -> Replicas:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.lb is not None:
            self.lb.close()
        for s in self.servers:
            s.stop()

    def stores_env(self) -> dict[str, str]:
        """The environment for an `oci-ref` command on these shared stores (fsck,
        gc): the metadata URL, the blob store's settings and its credentials."""
        env = dict(self.env)
        for key, value in self.settings.items():
            if key == 'blob_store' or key.startswith('s3_'):
                env[f'OCI_REF_{key.upper()}'] = (
                    ('1' if value else '0') if isinstance(value, bool) else str(value))
        return env

    def requests_seen(self, method: str, path_part: str) -> list[int]:
        """How many ``method`` requests whose path has ``path_part`` each replica
        logged (uvicorn's access log)."""
        pattern = re.compile(rf'"{method} [^"]*{re.escape(path_part)}')
        return [len(pattern.findall(s.log.read_text(errors='replace')))
                for s in self.servers]


class ReplicaSets:
    """Replica sets on ``postgres`` and, with ``blobs='s3'``, ``s3``: ``serve`` is the
    ``serve`` of conformance/run.py's ``run_one``."""

    def __init__(self, postgres: PostgresServer, s3: MotoServer | None = None, *,
                 count: int = 2, blobs: str = 's3',
                 load_balancer: LoadBalancer = HAProxy):
        if blobs not in BLOB_STORES:
            raise ValueError(f'blobs: one of {", ".join(BLOB_STORES)}, not {blobs!r}')
        if blobs == 's3' and s3 is None:
            raise ValueError('blobs in S3 need an S3 server')
        self.postgres, self.s3 = postgres, s3
        self.count, self.blobs = count, blobs
        self.load_balancer = load_balancer

    def describe(self) -> str:
        where = 'S3 (moto)' if self.blobs == 's3' else 'a shared filesystem'
        return f'{self.count} replicas on PostgreSQL + {where} behind haproxy'

    @contextlib.contextmanager
    def serve(self, root: Path, **settings: Any) -> Iterator[Replicas]:
        env: dict[str, str] = {}
        if self.blobs == 's3':
            assert self.s3 is not None
            self.s3.resume()  # an earlier test may have paused or stopped it
            if not self.s3.running():
                self.s3.restart()
            env, more = s3_settings(self.s3.bucket())
            settings = {**more, **settings}
        name, url = self.postgres.create_database()
        try:
            with Replicas(root, url, self.load_balancer, self.count, env=env,
                          **settings) as r:
                yield r
        finally:
            self.postgres.drop_database(name)


class EngineMissing(RuntimeError):
    """An engine the replicas need is not installed (the message says how to)."""


def check_engines(blobs: str = 's3') -> tuple[Path, str | None]:
    """What ``standalone`` needs is installed: (PostgreSQL's bindir, the user it runs
    as); else EngineMissing saying how to install it."""
    import pytest

    from tests import engines

    try:
        for module in ('psycopg', *(('moto.server', 'aiobotocore', 'boto3')
                                    if blobs == 's3' else ())):
            engines.require(module)
        bindir = engines.postgres_bindir()
        if bindir is None:
            engines.missing('PostgreSQL server (initdb, postgres) is not installed')
        if shutil.which('haproxy', path=os.pathsep.join(
                ['/usr/sbin', '/usr/bin', os.environ.get('PATH', '')])) is None:
            engines.missing('haproxy is not installed')
        user = engines.run_as_user()
    except (pytest.skip.Exception, pytest.fail.Exception) as ex:
        raise EngineMissing(str(ex.msg)) from None
    assert bindir is not None
    return bindir, user


@contextlib.contextmanager
def standalone(count: int, blobs: str = 's3') -> Iterator[ReplicaSets]:
    """Start PostgreSQL (and moto for S3 blobs) for the duration, outside pytest."""
    bindir, user = check_engines(blobs)
    with contextlib.ExitStack() as stack:
        postgres = PostgresServer(bindir, user)
        stack.callback(postgres.close)
        s3 = None
        if blobs == 's3':
            s3 = MotoServer()
            stack.callback(s3.close)
        yield ReplicaSets(postgres, s3, count=count, blobs=blobs)
