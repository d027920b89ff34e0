"""``oci_ref.testing``: the one helper that starts a server, waits until it is ready
and stops it (with what it started), and ``free_port``; real processes throughout."""

from __future__ import annotations

import http.server
import socket
import sys
import threading
from collections.abc import Iterator

import httpx
import pytest

import oci_ref.testing
from oci_ref.testing import NotReady, OCIRegistry, Process, free_port, http_ready
from tests.e2e._helpers import alive, port_refuses

pytestmark = pytest.mark.e2e


def test_free_port_is_a_loopback_port_nothing_listens_on():
    port = free_port()
    assert port_refuses(port)
    with socket.socket() as s:
        s.bind(('127.0.0.1', port))  # free: we can take it ourselves


def test_spawn_waits_until_the_server_answers_and_stop_ends_it(tmp_path):
    port = free_port()
    url = f'http://127.0.0.1:{port}/'
    proc = Process.spawn([sys.executable, '-m', 'http.server', '--bind', '127.0.0.1',
                          str(port)], log=tmp_path / 'http.log', cwd=tmp_path)
    took = proc.wait_ready(http_ready(url))
    assert took > 0
    assert httpx.get(url).status_code == 200
    assert proc.poll() is None
    assert proc.stop() == -15  # our SIGTERM ended it
    assert port_refuses(port)
    assert 'GET / HTTP/1.1' in proc.log.read_text()


def test_a_process_that_exits_early_raises_not_ready_with_its_log(tmp_path):
    code = 'print("cannot bind"); raise SystemExit(3)'
    proc = Process.spawn([sys.executable, '-c', code],
                         log=tmp_path / 'early.log', name='early')
    with pytest.raises(NotReady) as caught:
        proc.wait_ready(lambda: False)
    assert caught.value.exited
    assert 'early exited with status 3' in str(caught.value)
    assert 'cannot bind' in str(caught.value)


def test_a_process_never_ready_is_stopped_at_the_deadline(tmp_path):
    proc = Process.spawn([sys.executable, '-c', 'import signal; signal.pause()'],
                         log=tmp_path / 'never.log')
    with pytest.raises(NotReady) as caught:
        proc.wait_ready(lambda: False, timeout=0.3)
    assert not caught.value.exited
    assert 'not ready after 0.3s' in str(caught.value)
    assert proc.poll() == -15  # stopped before the error was raised


def test_stop_also_ends_what_the_process_left_behind(tmp_path):
    """A shell that started a server and died on SIGTERM leaves the server running
    (as `make run` or a wrapper script would): stop() ends it too, by its PID."""
    pidfile = tmp_path / 'grandchild.pid'
    script = (f'{sys.executable} -c "import signal; signal.pause()" & '
              f'echo $! > {pidfile}; wait')
    proc = Process.spawn(['bash', '-c', script], log=tmp_path / 'sh.log')
    proc.wait_ready(lambda: pidfile.exists() and pidfile.read_text().endswith('\n'))
    grandchild = int(pidfile.read_text())
    assert proc.descendants() == [grandchild]
    proc.stop(timeout=5)
    assert not alive(grandchild)


class AnswersEverything(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header('Content-Length', '0')
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def impostor() -> Iterator[int]:
    """Another HTTP server that answers 200 to anything, on a port of its own."""
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), AnswersEverything)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_registry_that_loses_the_port_race_moves_to_another_port(tmp_path, monkeypatch,
                                                                  impostor):
    """The port was free when probed but another server took it first and answers
    /healthz: that answer is not taken for ours; the next port is used."""
    ports = iter([impostor, free_port()])
    monkeypatch.setattr(oci_ref.testing, 'free_port', lambda: next(ports))
    with OCIRegistry(tmp_path / 'data') as registry:
        assert registry.port != impostor
        assert registry.process.listens_on(registry.port)
        assert httpx.get(registry.url + '/v2/').json() == {}
        lost = tmp_path / f'oci-ref-{impostor}.log'
        assert 'address already in use' in lost.read_text().lower()


def test_registry_that_cannot_start_raises_with_its_log(tmp_path):
    with pytest.raises(NotReady) as caught:
        OCIRegistry(tmp_path / 'data', page_max='many')
    assert caught.value.exited
    assert caught.value.process.returncode == 2
    assert 'page_max' in str(caught.value)


def test_registry_stop_ends_its_workers(tmp_path):
    registry = OCIRegistry(tmp_path / 'data', workers=2)
    registry.process.wait_ready(lambda: len(registry.process.descendants()) >= 2)
    workers = registry.process.descendants()
    assert registry.stop() == 0
    assert not any(alive(pid) for pid in workers), workers
