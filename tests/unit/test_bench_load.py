"""bench/load.py: how each load generator's output becomes req/s, latencies and an
error count, which tool is chosen from what is installed, and the built-in generator
against a real loopback server. Rates are never asserted: `make bench` measures."""

from __future__ import annotations

import http.server
import math
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.load import choose_loadgens, parse_hey, parse_wrk, run_aio

WRK_OUT = """\
Running 2s test @ http://127.0.0.1:40000/v2/bench/wrk/manifests/latest
  2 threads and 32 connections
WRKJSON {"requests":20000,"duration_us":2000000,"bytes":30000000,"connect":0,\
"read":0,"write":0,"status":3,"timeout":2,"p50_us":2400,"p99_us":8100,"mean_us":2510.4}
"""

# hey's summary as it prints it (-z 2s -c 32 -m HEAD), numbers made up.
HEY_OUT = """
Summary:
  Total:\t2.0012 secs
  Slowest:\t0.0411 secs
  Fastest:\t0.0003 secs
  Average:\t0.0038 secs
  Requests/sec:\t8110.3456

  Total data:\t0 bytes
  Size/request:\t0 bytes

Response time histogram:
  0.000 [1]\t|
  0.004 [9000]\t|■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■

Latency distribution:
  10% in 0.0021 secs
  25% in 0.0027 secs
  50% in 0.0034 secs
  75% in 0.0043 secs
  90% in 0.0055 secs
  95% in 0.0064 secs
  99% in 0.0091 secs

Details (average, fastest, slowest):
  DNS+dialup:\t0.0000 secs, 0.0003 secs, 0.0411 secs
  req write:\t0.0000 secs, 0.0000 secs, 0.0010 secs

Status code distribution:
  [200]\t16200 responses
  [404]\t20 responses

Error distribution:
  [3]\tGet "http://127.0.0.1:40000/v2/": dial tcp: connection refused
  [1]\tGet "http://127.0.0.1:40000/v2/": context deadline exceeded
"""


def test_parse_wrk() -> None:
    r = parse_wrk(WRK_OUT)
    assert r['rps'] == pytest.approx(10000.0)  # 20,000 requests in 2 s
    assert r['p50_ms'] == pytest.approx(2.4)
    assert r['p99_ms'] == pytest.approx(8.1)
    assert r['requests'] == 20000
    assert r['errors'] == 5  # status 3 + timeout 2


def test_parse_wrk_counts_a_run_without_requests_as_an_error() -> None:
    out = WRK_OUT.replace('"requests":20000', '"requests":0').replace(
        '"status":3,"timeout":2', '"status":0,"timeout":0'
    )
    r = parse_wrk(out)
    assert (r['rps'], r['errors']) == (0.0, 1)


def test_parse_wrk_without_its_line_fails() -> None:
    with pytest.raises(ValueError):
        parse_wrk('unable to connect to 127.0.0.1:40000 Connection refused\n')


def test_parse_hey() -> None:
    r = parse_hey(HEY_OUT)
    assert r['rps'] == pytest.approx(8110.3456)
    assert r['p50_ms'] == pytest.approx(3.4)
    assert r['p99_ms'] == pytest.approx(9.1)
    assert r['requests'] == 16220
    assert r['errors'] == 20 + 4  # the 404s and the failed requests


def test_parse_hey_without_errors_or_quantiles() -> None:
    text = '  Requests/sec:\t100.5\n\nStatus code distribution:\n  [200]\t201 responses\n'
    r = parse_hey(text)
    assert (r['rps'], r['requests'], r['errors']) == (100.5, 201, 0)
    assert math.isnan(r['p50_ms']) and math.isnan(r['p99_ms'])


def test_parse_hey_without_a_rate_fails() -> None:
    with pytest.raises(ValueError):
        parse_hey('Error: invalid URL\n')


@pytest.mark.parametrize(
    ('installed', 'choice', 'want'),
    [
        ({'wrk', 'hey'}, 'auto', {'GET': 'wrk', 'HEAD': 'hey'}),
        ({'wrk', 'hey'}, 'hey', {'GET': 'hey', 'HEAD': 'hey'}),
        ({'wrk', 'hey'}, 'python', {'GET': 'python', 'HEAD': 'python'}),
        ({'hey'}, 'auto', {'GET': 'hey', 'HEAD': 'hey'}),
        ({'wrk'}, 'auto', {'GET': 'wrk', 'HEAD': 'python'}),  # wrk cannot HEAD
        (set(), 'auto', {'GET': 'python', 'HEAD': 'python'}),
    ],
)
def test_choose_loadgens_uses_what_is_installed(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    installed: set[str],
    choice: str,
    want: dict[str, str],
) -> None:
    for tool in installed:
        exe = tmp_path / tool
        exe.write_text('#!/bin/sh\nexit 0\n')
        exe.chmod(0o755)
    monkeypatch.setenv('PATH', str(tmp_path))
    assert choose_loadgens(choice) == want


class Answer(http.server.BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1: 200 with a 1 KiB body on /ok, 404 elsewhere."""

    protocol_version = 'HTTP/1.1'
    body = b'x' * 1024

    def _head(self) -> None:
        self.send_response(200 if self.path == '/ok' else 404)
        self.send_header('Content-Length', str(len(self.body)))
        self.end_headers()

    def do_HEAD(self) -> None:
        self._head()

    def do_GET(self) -> None:
        self._head()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def port() -> Iterator[int]:
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Answer)
    srv.daemon_threads = True
    th = threading.Thread(target=srv.serve_forever)
    th.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()
    th.join()


@pytest.mark.parametrize('method', ['GET', 'HEAD'])
def test_builtin_generator_counts_answers(port: int, method: str) -> None:
    """GET reads each 1 KiB body, HEAD must not wait for one: either way every answer
    on the keep-alive connections is a request, and 2xx ones are not errors."""
    r = run_aio(port, '/ok', method, 0.3, 2)
    assert r['requests'] > 0
    assert r['errors'] == 0
    assert r['p50_ms'] <= r['p99_ms']


def test_builtin_generator_counts_non_2xx_as_errors(port: int) -> None:
    r = run_aio(port, '/missing', 'GET', 0.3, 2)
    assert r['requests'] > 0
    assert r['errors'] == r['requests']
