"""Webhooks on a real `oci-ref serve`: one JSON event per push, pull, mount and delete,
to every configured URL, retried after failures, and never slowing a request (a full
queue drops events and counts them on /metrics).

The receivers are http.server threads (or, for "never answers", a bare socket that
accepts and stays silent), all on 127.0.0.1.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from oci_ref.testing import free_port
from tests.e2e._helpers import Started, children
from tests.support import (
    OCI_MANIFEST,
    assert_error,
    digest,
    image_manifest,
    push_blob,
)

pytestmark = pytest.mark.e2e

EVENTS_TYPE = 'application/vnd.oci-ref.events.v1+json'


def wait_until(check: Callable[[], bool], timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class Receiver:
    """An HTTP webhook endpoint recording every delivery attempt; answers 500 to the
    next ``fail_next`` attempts, 200 otherwise."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.attempts: list[dict[str, Any]] = []
        self.fail_next = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers['Content-Length']))
                with receiver.lock:
                    status = 200
                    if receiver.fail_next:
                        receiver.fail_next -= 1
                        status = 500
                    receiver.attempts.append({
                        'status': status, 'path': self.path,
                        'content_type': self.headers['Content-Type'],
                        'body': json.loads(body),
                    })
                self.send_response(status)
                self.send_header('Content-Length', '0')
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/events'
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def events(self) -> list[dict[str, Any]]:
        """Events of the deliveries answered 200, in arrival order."""
        with self.lock:
            return [e for a in self.attempts if a['status'] == 200
                    for e in a['body']['events']]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Silent:
    """Accepts connections and never answers (nor reads)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(('127.0.0.1', 0))
        self.sock.settimeout(0.1)
        self.url = f'http://127.0.0.1:{self.sock.getsockname()[1]}/events'
        self.conns: list[socket.socket] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()
        self.sock.close()
        for conn in self.conns:
            conn.close()


def hook_counts(srv: Started) -> dict[str, float]:
    r = httpx.get(srv.url + '/metrics', timeout=30)
    assert r.status_code == 200
    return {s.labels['outcome']: s.value
            for family in text_string_to_metric_families(r.text)
            for s in family.samples if s.name == 'oci_ref_hook_events_total'}


@pytest.fixture(scope='module')
def receivers() -> Iterator[tuple[Receiver, Receiver]]:
    a, b = Receiver(), Receiver()
    yield a, b
    a.close()
    b.close()


@pytest.fixture(scope='module')
def hooked(tmp_path_factory: pytest.TempPathFactory,
           receivers: tuple[Receiver, Receiver]) -> Iterator[Started]:
    a, b = receivers
    srv = Started(tmp_path_factory.mktemp('hooks') / 'data', '--hooks', f'{a.url},{b.url}')
    yield srv
    srv.stop()


def matches(event: dict[str, Any], action: str, target: dict[str, Any]) -> bool:
    """``event`` is ``action`` on ``target``: the given fields equal, and no tag
    unless one is expected."""
    got = event['target']
    return (event['action'] == action
            and all(got.get(k) == v for k, v in target.items())
            and ('tag' in target or 'tag' not in got))


def test_one_json_event_per_push_pull_mount_and_delete_with_the_right_target(
        hooked, receivers):
    a, b = receivers
    start = len(a.events())
    repo, other = 'hooks/app', 'hooks/copy'
    config = b'{"architecture": "amd64", "os": "linux"}'
    layer = b'layer bytes for the hooks test'
    body = image_manifest(config, [layer])
    m = digest(body)
    expected: list[tuple[str, str, dict[str, Any]]] = []  # (method, action, target)
    with hooked.client() as c:
        push_blob(c, repo, config)  # POST + PUT
        expected.append(('PUT', 'push', {'repository': repo, 'digest': digest(config)}))
        r = c.post(f'/v2/{repo}/blobs/uploads/?digest={digest(layer)}', content=layer)
        assert r.status_code == 201
        expected.append(('POST', 'push', {'repository': repo, 'digest': digest(layer)}))
        r = c.put(f'/v2/{repo}/manifests/v1', content=body,
                  headers={'Content-Type': OCI_MANIFEST})
        assert r.status_code == 201
        expected.append(('PUT', 'push', {'repository': repo, 'digest': m, 'tag': 'v1',
                                         'mediaType': OCI_MANIFEST, 'size': len(body)}))
        # HEADs and failed requests are not events.
        assert c.head(f'/v2/{repo}/blobs/{digest(layer)}').status_code == 200
        assert c.head(f'/v2/{repo}/manifests/v1').status_code == 200
        assert_error(c.get(f'/v2/{repo}/blobs/{digest(b"absent")}'), 404, 'BLOB_UNKNOWN')
        assert c.get(f'/v2/{repo}/blobs/{digest(layer)}').content == layer
        expected.append(('GET', 'pull', {'repository': repo, 'digest': digest(layer),
                                         'size': len(layer)}))
        assert c.get(f'/v2/{repo}/manifests/v1').content == body
        expected.append(('GET', 'pull', {'repository': repo, 'digest': m, 'tag': 'v1',
                                         'mediaType': OCI_MANIFEST, 'size': len(body)}))
        assert c.get(f'/v2/{repo}/manifests/{m}').content == body
        expected.append(('GET', 'pull', {'repository': repo, 'digest': m,
                                         'mediaType': OCI_MANIFEST}))
        r = c.post(f'/v2/{other}/blobs/uploads/?mount={digest(layer)}&from={repo}')
        assert r.status_code == 201, r.content
        expected.append(('POST', 'mount', {'repository': other, 'digest': digest(layer),
                                           'fromRepository': repo}))
        assert c.delete(f'/v2/{other}/blobs/{digest(layer)}').status_code == 202
        expected.append(('DELETE', 'delete', {'repository': other,
                                              'digest': digest(layer)}))
        assert c.delete(f'/v2/{repo}/manifests/v1').status_code == 202
        expected.append(('DELETE', 'delete', {'repository': repo, 'tag': 'v1'}))
        assert c.delete(f'/v2/{repo}/manifests/{m}').status_code == 202
        expected.append(('DELETE', 'delete', {'repository': repo, 'digest': m}))

        # One worker, one delivery task: events arrive in the order they happened.
        # A marker event after the last expected one proves nothing else is still
        # on its way (no waiting for silence).
        marker = push_blob(c, 'hooks/marker', b'the last event of this test')

    def marker_arrived(events: list[dict[str, Any]]) -> bool:
        return any(e['target'].get('digest') == marker for e in events[start:])

    assert wait_until(lambda: marker_arrived(a.events()) and marker_arrived(b.events()))
    got = a.events()[start:]
    got = got[:next(i for i, e in enumerate(got) if e['target'].get('digest') == marker)]
    assert len(got) == len(expected), [(e['action'], e['target']) for e in got]
    for event, (method, action, target) in zip(got, expected, strict=True):
        assert matches(event, action, target), (action, target, event)
        assert event['request']['method'] == method, event
        assert event['request']['addr'] == '127.0.0.1'
        uuid.UUID(event['id'])
        assert event['timestamp'].endswith('Z')
        datetime.fromisoformat(event['timestamp'].replace('Z', '+00:00'))
    assert len({e['id'] for e in got}) == len(got)
    # Every attempt was a POST of {"events": [...]} to the configured path.
    with a.lock:
        for attempt in a.attempts:
            assert attempt['path'] == '/events'
            assert attempt['content_type'] == EVENTS_TYPE
            assert len(attempt['body']['events']) == 1


def test_every_configured_url_receives_every_event(hooked, receivers):
    a, b = receivers
    start_a, start_b = len(a.events()), len(b.events())
    with hooked.client() as c:
        digests = [push_blob(c, 'hooks/both', f'blob {i}'.encode()) for i in range(3)]
    assert wait_until(lambda: len(a.events()) >= start_a + 3
                      and len(b.events()) >= start_b + 3)
    for r in (a, b):
        got = r.events()[len(r.events()) - 3:]
        assert [e['target']['digest'] for e in got] == digests
    assert ([e['id'] for e in a.events()[start_a:]] ==
            [e['id'] for e in b.events()[start_b:]])


def test_a_delivery_answered_500_twice_is_retried_until_it_succeeds(hooked, receivers):
    a, b = receivers
    start_a = len(a.events())
    with b.lock:
        start_attempts = len(b.attempts)
        b.fail_next = 2
    with hooked.client() as c:
        d = push_blob(c, 'hooks/retry', b'retried event')
    assert wait_until(lambda: any(e['target'].get('digest') == d for e in b.events()))
    with b.lock:
        attempts = b.attempts[start_attempts:]
    assert [x['status'] for x in attempts] == [500, 500, 200]
    ids = {x['body']['events'][0]['id'] for x in attempts}
    assert len(ids) == 1, 'every retry carries the same event'
    assert [e['target']['digest'] for e in a.events()[start_a:]] == [d]
    assert [e['id'] for e in a.events()[start_a:]] == list(ids)


def test_a_receiver_that_never_answers_slows_no_request_and_a_full_queue_drops(
        tmp_path):
    silent = Silent()
    srv = Started(tmp_path / 'data', '--hooks', silent.url, '--hook-queue', '1',
                  '--hook-retries', '0')
    try:
        durations = []
        events = 0
        with srv.client() as c:
            for i in range(6):
                data = f'event {i}'.encode()
                t0 = time.monotonic()
                r = c.post(f'/v2/hang/app/blobs/uploads/?digest={digest(data)}',
                           content=data)
                durations.append(time.monotonic() - t0)
                assert r.status_code == 201
                t0 = time.monotonic()
                assert c.get(f'/v2/hang/app/blobs/{digest(data)}').content == data
                durations.append(time.monotonic() - t0)
                events += 2
        # The first event is stuck on the silent receiver (a delivery times out after
        # 5 s): a request that waited for it would take that long.
        assert max(durations) < 3, durations
        assert wait_until(lambda: bool(silent.conns), 5)
        counts = hook_counts(srv)
        assert counts.get('queued', 0) + counts.get('dropped', 0) == events, counts
        assert counts.get('dropped', 0) >= events - 2, counts
        assert counts.get('delivered', 0) == 0, counts
        # Once the receiver goes away the stuck deliveries fail (no retries) ...
        silent.close()
        assert wait_until(lambda: hook_counts(srv).get('failed', 0)
                          == counts.get('queued', 0), 10), hook_counts(srv)
    finally:
        silent.close()  # idempotent
        t0 = time.monotonic()
        code = srv.stop()
    # ... so nothing is left to hold up a clean shutdown.
    assert code == 0
    assert time.monotonic() - t0 < 5


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f'/proc/{pid}/environ').read_bytes()
    except OSError:
        return {}
    return dict(item.decode(errors='replace').partition('=')[::2]
                for item in raw.split(b'\0') if item)


def test_webhook_urls_stay_out_of_logs_and_worker_environments(tmp_path):
    """A hook URL carrying credentials (user info, a path token, a query token):
    a failed delivery logs the hook by scheme and host only, and no process of
    the server (the serve process, its workers) has the URL in its environment;
    the workers read it from a 0600 file that is gone once the server stops."""
    secret = 'hookTok3n-5521'
    url = (f'http://hookuser:{secret}-pw@127.0.0.1:{free_port()}/events/{secret}-path'
           f'?token={secret}-q#frag-{secret}')
    config = tmp_path / 'oci-ref.toml'
    config.write_text(f'hooks = ["{url}"]\nhook_retries = 0\nworkers = 2\n')
    srv = Started(tmp_path / 'data', '--config', str(config))
    try:
        with srv.client() as c:
            push_blob(c, 'secret/hooks', b'an event whose delivery fails')
        assert wait_until(lambda: hook_counts(srv).get('failed', 0) >= 1)
        pids = [srv.proc.pid]
        for pid in pids:  # every descendant
            pids += children(pid)
        environs = {pid: _environ(pid) for pid in pids}
        assert len(pids) >= 3, pids  # serve, and two workers
        files = set()
        for pid, env in environs.items():
            leaked = [k for k, v in env.items() if secret in v]
            assert not leaked, (pid, leaked)
            if 'OCI_REF__SECRETS_FILE' in env:
                files.add(env['OCI_REF__SECRETS_FILE'])
        assert len(files) == 1, files
        secrets_file = Path(files.pop())
        assert secrets_file.stat().st_mode & 0o777 == 0o600
    finally:
        srv.stop()
    assert not secrets_file.exists()
    log = srv.log.read_text()
    assert 'gave up on push event' in log, log[-2000:]
    assert 'hook 1 (http://127.0.0.1:' in log
    assert secret not in log and 'hookuser' not in log, log[-2000:]
