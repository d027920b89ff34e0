"""bench/falcon_bare.py, the framework's ceiling for manifest HEAD/GET: a fixed 1 KiB
manifest answer on every path, and that the bench starts it on uvicorn the way it
starts the registries (bench/servers.py)."""

from __future__ import annotations

import http.client
import json
import sys
from pathlib import Path

import falcon.testing
import pytest

from bench.falcon_bare import BODY, DIGEST, MEDIA_TYPE, app
from bench.plan import BARE
from bench.servers import Server


@pytest.fixture
def client() -> falcon.testing.TestClient:
    return falcon.testing.TestClient(app)


def test_body_is_one_kib_of_json() -> None:
    assert len(BODY) == 1024
    assert json.loads(BODY)['schemaVersion'] == 2


@pytest.mark.parametrize('path', ['/v2/', '/v2/bench/wrk/manifests/latest'])
def test_get_answers_the_body(client: falcon.testing.TestClient, path: str) -> None:
    r = client.simulate_get(path)
    assert r.status_code == 200
    assert r.content == BODY
    assert r.headers['content-type'] == MEDIA_TYPE
    assert r.headers['docker-content-digest'] == DIGEST


def test_head_announces_the_body_without_it(client: falcon.testing.TestClient) -> None:
    r = client.simulate_head('/v2/bench/wrk/manifests/latest')
    assert r.status_code == 200
    assert r.headers['content-length'] == '1024'
    assert r.content == b''


def test_the_bench_serves_it_on_uvicorn(tmp_path: Path) -> None:
    s = Server(BARE, 1, tmp_path, sys.executable, {})
    try:
        s.start()
        conn = http.client.HTTPConnection('127.0.0.1', s.port, timeout=10)
        conn.request('GET', '/v2/bench/wrk/manifests/latest')
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, BODY)
        assert r.getheader('server') is None  # as oci-ref serve: no server header
        conn.close()
    finally:
        s.stop()
    assert s.proc is None
