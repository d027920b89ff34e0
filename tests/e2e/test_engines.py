"""The real engines of tests/engines.py, and the libraries the scale-out stores use on
them, on uvloop as in the server: psycopg 3 (async pool) on PostgreSQL, aiobotocore on
moto's S3, two real `oci-ref serve` replicas behind haproxy. Each test shows the
engine behaves as the production one does where the stores will rely on it (locks,
the 5 MiB part rule, presigning, what a dead S3 endpoint raises, round-robin without
stickiness).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.engines import HAProxy, MotoServer, PostgresServer, S3Bucket, run_as_user
from tests.support import Server

pytestmark = [pytest.mark.e2e, pytest.mark.engines]

MiB = 1 << 20
T = TypeVar('T')


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on uvloop, the loop `oci-ref serve` runs the stores on."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


# ------------------------------------------------------------- PostgreSQL ----
def test_postgres_is_a_private_unprivileged_cluster(postgres_server: PostgresServer,
                                                    postgres_url: str) -> None:
    """A fresh database, owned by a non-superuser role, served on 127.0.0.1 by a
    postmaster that is not root."""
    import psycopg

    with psycopg.connect(postgres_url) as conn:
        user, superuser, addr, port = conn.execute(
            'SELECT current_user, rolsuper, inet_server_addr()::text, inet_server_port() '
            'FROM pg_roles WHERE rolname = current_user').fetchone()
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]
        version = conn.info.server_version
    assert (user, superuser, port) == ('oci_ref', False, postgres_server.port)
    assert addr.startswith('127.0.0.1')
    assert tables == 0
    assert version >= 150000
    uid = int(re.search(r'^Uid:\s+(\d+)', Path(f'/proc/{postgres_server.proc.pid}/status')
                        .read_text(), re.M)[1])
    assert uid == os.geteuid() if run_as_user() is None else uid != 0


def test_postgres_database_per_test_is_fresh(postgres_server: PostgresServer,
                                             postgres_url: str) -> None:
    """Each test's database is its own: a table made here is not in another one."""
    import psycopg

    with psycopg.connect(postgres_url) as conn:
        conn.execute('CREATE TABLE mine (x int)')
    other, other_url = postgres_server.create_database()
    try:
        with psycopg.connect(other_url) as conn:
            assert conn.execute("SELECT to_regclass('mine')").fetchone()[0] is None
    finally:
        postgres_server.drop_database(other)


def test_async_pool_holds_connections_at_once(postgres_url: str) -> None:
    """psycopg_pool's AsyncConnectionPool gives four tasks four connections at the same
    time (each waits at a barrier while holding its own): queries never queue behind
    one connection."""
    from psycopg_pool import AsyncConnectionPool

    async def main() -> set[int]:
        barrier = asyncio.Barrier(4)
        async with AsyncConnectionPool(postgres_url, min_size=1, max_size=4,
                                       open=False) as pool:
            await pool.wait(timeout=10)

            async def task(i: int) -> int:
                async with pool.connection() as conn:
                    await asyncio.wait_for(barrier.wait(), 30)
                    cur = await conn.execute('SELECT pg_backend_pid(), %s::int', [i])
                    pid, echo = await cur.fetchone()
                    assert echo == i
                    return int(pid)

            return set(await asyncio.gather(*(task(i) for i in range(4))))

    assert len(run(main())) == 4


def test_advisory_lock_blocks_other_sessions(postgres_url: str) -> None:
    """pg_try_advisory_lock fails while another session holds the key; a blocking
    pg_advisory_lock waits (seen in pg_locks) and gets it once the holder lets go."""
    import psycopg

    key = 1414

    async def main() -> None:
        holder = await psycopg.AsyncConnection.connect(postgres_url, autocommit=True)
        other = await psycopg.AsyncConnection.connect(postgres_url, autocommit=True)
        watcher = await psycopg.AsyncConnection.connect(postgres_url, autocommit=True)
        async with holder, other, watcher:
            async def one(conn: Any, sql: str) -> Any:
                return (await (await conn.execute(sql, [key])).fetchone())[0]

            assert await one(holder, 'SELECT pg_try_advisory_lock(%s)') is True
            assert await one(other, 'SELECT pg_try_advisory_lock(%s)') is False
            waiting = asyncio.create_task(one(other, 'SELECT pg_advisory_lock(%s)'))
            for _ in range(500):  # poll, up to ~10 s, until the server says it waits
                cur = await watcher.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    'AND objid = %s AND NOT granted', [key])
                if (await cur.fetchone())[0] == 1:
                    break
                await asyncio.sleep(0.02)
            else:
                pytest.fail('pg_advisory_lock never waited')
            assert not waiting.done()
            assert await one(holder, 'SELECT pg_advisory_unlock(%s)') is True
            await asyncio.wait_for(waiting, 10)
            assert await one(holder, 'SELECT pg_try_advisory_lock(%s)') is False

    run(main())


def test_concurrent_migrations_under_a_lock(postgres_url: str) -> None:
    """Five replicas starting at once: each migrates inside a transaction that first
    takes pg_advisory_xact_lock, so the schema is made once and every start succeeds."""
    import psycopg

    async def migrate(replica: int) -> bool:
        conn = await psycopg.AsyncConnection.connect(postgres_url)
        async with conn, conn.transaction():
            await conn.execute('SELECT pg_advisory_xact_lock(%s)', [0x0C1_2EF])
            await conn.execute('CREATE TABLE IF NOT EXISTS schema_version '
                               '(version int NOT NULL, applied_by int NOT NULL)')
            cur = await conn.execute('SELECT max(version) FROM schema_version')
            if (await cur.fetchone())[0] is not None:
                return False
            await conn.execute('CREATE TABLE blobs (digest text PRIMARY KEY, '
                               'size bigint NOT NULL)')
            await conn.execute('INSERT INTO schema_version VALUES (1, %s)', [replica])
            return True

    async def main() -> list[bool]:
        return list(await asyncio.gather(*(migrate(i) for i in range(5))))

    assert sorted(run(main())) == [False] * 4 + [True]
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute('SELECT count(*) FROM schema_version').fetchone()[0] == 1
        assert conn.execute("SELECT to_regclass('blobs')::text").fetchone()[0] == 'blobs'


# -------------------------------------------------------------------- S3 ----
def s3(bucket: S3Bucket, **config: Any) -> Any:
    from aiobotocore.session import get_session

    return get_session().create_client('s3', **bucket.client_kwargs(**config))


async def read(resp: dict[str, Any]) -> bytes:
    async with resp['Body'] as body:
        return bytes(await body.read())


def test_s3_put_and_ranged_get(s3_bucket: S3Bucket) -> None:
    """PutObject, HeadObject, GetObject with a Range (206, Content-Range); a missing
    key is NoSuchKey."""
    data = os.urandom(MiB + 7)

    async def main() -> None:
        async with s3(s3_bucket) as c:
            b = s3_bucket.bucket
            await c.put_object(Bucket=b, Key='blobs/a', Body=data)
            head = await c.head_object(Bucket=b, Key='blobs/a')
            assert head['ContentLength'] == len(data)
            r = await c.get_object(Bucket=b, Key='blobs/a', Range='bytes=100-199')
            assert r['ResponseMetadata']['HTTPStatusCode'] == 206
            assert r['ContentRange'] == f'bytes 100-199/{len(data)}'
            assert await read(r) == data[100:200]
            r = await c.get_object(Bucket=b, Key='blobs/a', Range=f'bytes={MiB}-')
            assert await read(r) == data[MiB:]
            with pytest.raises(c.exceptions.NoSuchKey):
                await c.get_object(Bucket=b, Key='blobs/none')

    run(main())


def test_s3_multipart_upload(s3_bucket: S3Bucket) -> None:
    """Create, two parts (5 MiB, then a short last one), list the open upload and its
    parts, complete; a too-small first part is refused at completion as on AWS
    (EntityTooSmall); an aborted upload is gone."""
    part1, part2 = os.urandom(5 * MiB), os.urandom(1000)

    async def upload(c: Any, key: str, parts: Sequence[bytes]) -> tuple[str, list[Any]]:
        up = await c.create_multipart_upload(Bucket=s3_bucket.bucket, Key=key)
        done = []
        for n, body in enumerate(parts, 1):
            r = await c.upload_part(Bucket=s3_bucket.bucket, Key=key, PartNumber=n,
                                    UploadId=up['UploadId'], Body=body)
            done.append({'PartNumber': n, 'ETag': r['ETag']})
        return up['UploadId'], done

    async def main() -> None:
        b = s3_bucket.bucket
        async with s3(s3_bucket) as c:
            upload_id, parts = await upload(c, 'big', [part1, part2])
            listed = await c.list_multipart_uploads(Bucket=b)
            assert [u['UploadId'] for u in listed['Uploads']] == [upload_id]
            lp = await c.list_parts(Bucket=b, Key='big', UploadId=upload_id)
            assert [(p['PartNumber'], p['Size']) for p in lp['Parts']] == [
                (1, len(part1)), (2, len(part2))]
            r = await c.complete_multipart_upload(
                Bucket=b, Key='big', UploadId=upload_id, MultipartUpload={'Parts': parts})
            assert r['ETag'].strip('"').endswith('-2')
            assert await read(await c.get_object(Bucket=b, Key='big')) == part1 + part2
            assert 'Uploads' not in await c.list_multipart_uploads(Bucket=b)

            small_id, small = await upload(c, 'small', [b'x' * 1000, b'y'])
            with pytest.raises(c.exceptions.ClientError) as err:
                await c.complete_multipart_upload(
                    Bucket=b, Key='small', UploadId=small_id,
                    MultipartUpload={'Parts': small})
            assert err.value.response['Error']['Code'] == 'EntityTooSmall'

            await c.abort_multipart_upload(Bucket=b, Key='small', UploadId=small_id)
            assert 'Uploads' not in await c.list_multipart_uploads(Bucket=b)
            # (ListParts: moto answers UploadPart on an aborted upload with a 500
            # where AWS says NoSuchUpload.)
            with pytest.raises(c.exceptions.NoSuchUpload):
                await c.list_parts(Bucket=b, Key='small', UploadId=small_id)

    run(main())


def test_s3_presigned_get(s3_bucket: S3Bucket) -> None:
    """A presigned GET URL (SigV4, path-style) carries its own authority: a plain HTTP
    client with no credentials fetches the object, also with a Range."""
    data = os.urandom(4096)

    async def main() -> str:
        async with s3(s3_bucket) as c:
            await c.put_object(Bucket=s3_bucket.bucket, Key='p', Body=data)
            return str(await c.generate_presigned_url(
                'get_object', Params={'Bucket': s3_bucket.bucket, 'Key': 'p'},
                ExpiresIn=60))

    url = run(main())
    assert url.startswith(f'{s3_bucket.endpoint_url}/{s3_bucket.bucket}/p?')
    assert 'X-Amz-Algorithm=AWS4-HMAC-SHA256' in url and 'X-Amz-Expires=60' in url
    r = httpx.get(url)
    assert r.status_code == 200 and r.content == data
    r = httpx.get(url, headers={'Range': 'bytes=10-19'})
    assert r.status_code == 206 and r.content == data[10:20]


def test_s3_down_raises_connection_errors(s3_server: MotoServer,
                                          s3_bucket: S3Bucket) -> None:
    """What the S3 blob store must turn into a 503. A stopped server: botocore's
    EndpointConnectionError (a ConnectionError), with no retry. A paused one (accepts
    connections, never answers): a GET ends in ReadTimeoutError at read_timeout, but a
    PUT (botocore sends ``Expect: 100-continue``, and aiohttp waits for the 100 with no
    read timeout) hangs until the caller's own deadline: the store needs one. A paused
    server keeps its objects; a stopped and restarted one is empty."""
    from botocore.exceptions import ConnectionError, ReadTimeoutError

    fail_fast = {'connect_timeout': 1, 'read_timeout': 1,
                 'retries': {'mode': 'standard', 'total_max_attempts': 1}}

    async def call(op: str, key: str, deadline: float = 30) -> Any:
        async with s3(s3_bucket, **fail_fast) as c:
            kw: dict[str, Any] = {'Bucket': s3_bucket.bucket, 'Key': key}
            if op == 'put_object':
                kw['Body'] = key.encode()
            return await asyncio.wait_for(getattr(c, op)(**kw), deadline)

    run(call('put_object', 'kept'))
    s3_server.pause()
    try:
        with pytest.raises(ReadTimeoutError):
            run(call('get_object', 'kept'))
        with pytest.raises((TimeoutError, ReadTimeoutError)):
            run(call('put_object', 'paused', deadline=3))
    finally:
        s3_server.resume()
    assert run(call('head_object', 'kept'))['ContentLength'] == len(b'kept')

    s3_server.stop()
    with pytest.raises(ConnectionError) as err:
        run(call('put_object', 'stopped'))
    assert type(err.value).__name__ == 'EndpointConnectionError'
    s3_server.restart()
    with pytest.raises(Exception, match='NoSuchBucket'):
        run(call('put_object', 'restarted'))


# ---------------------------------------------------------------- haproxy ----
def served_by(servers: Sequence[Server], paths: Sequence[str]) -> list[int]:
    """Which server's access log has each path (polled: a log line may trail the
    response by a moment)."""
    found: dict[str, int] = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for i, srv in enumerate(servers):
            text = srv.log.read_text(errors='replace')
            found.update({p: i for p in paths if f'"GET {p} HTTP' in text})
        if len(found) == len(paths):
            return [found[p] for p in paths]
        time.sleep(0.02)
    pytest.fail(f'requests not in any access log: {sorted(set(paths) - set(found))}')


def get_all(lb: HAProxy, tag: str, n: int, status: int = 404) -> list[str]:
    """``n`` GETs on one keep-alive connection through ``lb``, each a distinct path."""
    paths = [f'/v2/{tag}/r{i}/tags/list' for i in range(n)]
    with httpx.Client(base_url=lb.url) as c:
        for p in paths:
            assert c.get(p).status_code == status  # NAME_UNKNOWN from any replica
    return paths


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[Server]]:
    """Two real `oci-ref serve` processes, each with its own root (a test may append
    more: all are stopped)."""
    started: list[Server] = []
    for name in ('a', 'b'):
        (tmp_path / name).mkdir()
        started.append(Server(tmp_path / name / 'data'))
    yield started
    for srv in started:
        srv.stop()


def test_haproxy_round_robin_without_stickiness(
        replicas: list[Server], load_balancer: Callable[..., HAProxy]) -> None:
    """Requests on one keep-alive connection alternate between two real replicas; a
    replica in maintenance gets none until it is ready again."""
    lb = load_balancer([s.url for s in replicas])
    assert lb.states() == ['UP', 'UP']
    order = served_by(replicas, get_all(lb, 'rr', 8))
    assert sorted(order) == [0] * 4 + [1] * 4
    assert all(a != b for a, b in itertools.pairwise(order)), order

    lb.set_state(1, 'maint')
    assert lb.states() == ['UP', 'MAINT']
    assert served_by(replicas, get_all(lb, 'maint', 4)) == [0] * 4
    lb.set_state(1, 'ready')
    lb.wait_state(1, 'UP')
    assert sorted(served_by(replicas, get_all(lb, 'back', 4))) == [0, 0, 1, 1]


def test_haproxy_takes_a_killed_replica_out(
        replicas: list[Server], load_balancer: Callable[..., HAProxy]) -> None:
    """SIGKILL one replica: requests through haproxy still succeed (a refused
    connection is redispatched to the other), the health check marks it DOWN and the
    survivor answers everything. A new replica set is taken on the same port."""
    lb = load_balancer([s.url for s in replicas])
    a, b = replicas
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    with httpx.Client(base_url=lb.url) as c:
        for _ in range(6):
            assert c.get('/v2/').status_code == 200
    lb.wait_state(0, 'DOWN')
    assert served_by(replicas, get_all(lb, 'down', 4)) == [1] * 4

    (a.root.parent.parent / 'c').mkdir()
    replicas.append(Server(a.root.parent.parent / 'c' / 'data'))
    port = lb.port
    lb.set_backends([b.url, replicas[2].url])
    assert lb.port == port and lb.states() == ['UP', 'UP']
    assert sorted(served_by(replicas, get_all(lb, 'new', 4))) == [1, 1, 2, 2]
