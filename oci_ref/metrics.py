"""Prometheus metrics: requests by spec endpoint id and status, latency, bytes in and
out, open upload sessions and storage.

Request metrics are counted at the ASGI layer (:class:`Observe`), the one place that
sees the exact body bytes and the final status. With several workers ``oci-ref
serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` and every worker writes its samples there;
the storage and session gauges are read from the metadata store at scrape time, so
they are the same whichever worker answers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from bisect import bisect_left
from collections.abc import Iterable, Mapping, MutableMapping
from time import perf_counter
from typing import TYPE_CHECKING, Any

from oci_ref.http import ASGIApp, Receive, Send, mark_disconnect
from oci_ref.storage.interfaces import StoreStats

if TYPE_CHECKING:
    from prometheus_client.core import Metric

log = logging.getLogger('oci_ref')
ENDPOINT_KEY = 'oci_ref.endpoint'
CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'


# The latency histogram's upper bounds (seconds); +Inf is added by prometheus_client.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
           60, 300)


class _Instruments:
    """The request and webhook metrics. prometheus_client is imported when these
    are built, not with this module: that import is a good share of the server's
    start, and the first request does not need it (see :func:`_observe`)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.requests = Counter(
            'oci_ref_requests', 'HTTP requests by spec endpoint id, method and status',
            ['endpoint', 'method', 'status'],
        )
        self.latency = Histogram(
            'oci_ref_request_duration_seconds', 'Time to answer, by spec endpoint id',
            ['endpoint'], buckets=BUCKETS,
        )
        self.bytes_in = Counter('oci_ref_received_bytes', 'Request body bytes',
                                ['endpoint'])
        self.bytes_out = Counter('oci_ref_sent_bytes', 'Response body bytes',
                                 ['endpoint'])
        self.hook_events = Counter('oci_ref_hook_events', 'Webhook events by outcome',
                                   ['outcome'])

        # labels() validates and locks on every call: a tenth of a manifest HEAD's
        # CPU. The label sets are few (endpoint ids, methods, statuses): keep them.
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._bytes: dict[tuple[str, bool], Any] = {}

    def add(self, key: tuple[str, str, str], tally: _Tally) -> None:
        """Count ``tally``'s exchanges at once: one increment per counter and one
        per histogram bucket they fell in, not a locked update per request."""
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (self.requests.labels(*key),
                                              self.latency.labels(key[0]))
        requests, latency = children
        requests.inc(tally.count)
        # Histogram.observe() has no "n observations" form; its buckets and sum are
        # what observe() updates (prometheus_client keeps them per bucket, summed
        # at collection), so adding the counts there is the same as n observe()s.
        latency._raise_if_not_observable()
        latency._sum.inc(tally.seconds)
        for i, n in enumerate(tally.buckets):
            if n:
                latency._buckets[i].inc(n)
        if tally.bytes_in:
            self._byte_counter(key[0], True).inc(tally.bytes_in)
        if tally.bytes_out:
            self._byte_counter(key[0], False).inc(tally.bytes_out)

    def _byte_counter(self, endpoint: str, received: bool) -> Any:
        counter = self._bytes.get((endpoint, received))
        if counter is None:
            counter = self._bytes[endpoint, received] = (
                self.bytes_in if received else self.bytes_out).labels(endpoint)
        return counter


class _Tally:
    """Exchanges of one (endpoint, method, status) not yet added to the metrics."""

    __slots__ = ('buckets', 'bytes_in', 'bytes_out', 'count', 'seconds')

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.bytes_in = 0
        self.bytes_out = 0


_built: _Instruments | None = None
_build_lock = threading.Lock()
# Exchanges seen and not yet counted: added to the metrics once per event-loop turn
# (and before a scrape), so a busy turn pays one update per label set, not one per
# request.
_window: dict[tuple[str, str, str], _Tally] = {}
_flush_on: asyncio.AbstractEventLoop | None = None
_loading: asyncio.Future[_Instruments] | None = None


def instruments() -> _Instruments:
    """The metrics, built once per process (blocking: imports prometheus_client)."""
    global _built
    with _build_lock:
        if _built is None:
            _built = _Instruments()
    return _built


def _observe(endpoint: str, method: str, status: int, seconds: float, bytes_in: int,
             bytes_out: int) -> None:
    """Note one exchange in this turn's window; the window is counted at the end of
    the turn. Until the metrics are built, the window waits and the build runs in a
    thread: the event loop never waits for the import."""
    global _flush_on
    key = (endpoint, method, str(status or 500))
    tally = _window.get(key)
    if tally is None:
        tally = _window[key] = _Tally()
    tally.count += 1
    tally.seconds += seconds
    tally.buckets[bisect_left(BUCKETS, seconds)] += 1
    tally.bytes_in += bytes_in
    tally.bytes_out += bytes_out
    loop = asyncio.get_running_loop()
    if _flush_on is not loop:
        # (One loop per request in falcon.testing: a flush scheduled on an ended
        # loop never runs; the next exchange schedules one on its own loop.)
        _flush_on = loop
        loop.call_soon(_flush_window)


def _flush_window() -> None:
    global _flush_on, _loading
    _flush_on = None
    if _built is not None:
        _drain(_built)
        return
    loop = asyncio.get_running_loop()
    # A failed build is tried again by the next turn's exchanges.
    if _loading is None or _loading.done() or _loading.get_loop() is not loop:
        _loading = loop.run_in_executor(None, instruments)
        _loading.add_done_callback(_flush)


def _flush(loading: asyncio.Future[_Instruments]) -> None:
    if loading.cancelled() or loading.exception() is not None:
        log.error('metrics unavailable: %r', None if loading.cancelled()
                  else loading.exception())
        return
    _drain(loading.result())


def _drain(built: _Instruments) -> None:
    while _window:
        key = next(iter(_window))
        built.add(key, _window.pop(key))


async def flushed() -> None:
    """Every exchange seen so far counted (before a scrape reads the counters)."""
    built = _built if _built is not None else await asyncio.to_thread(instruments)
    _drain(built)


# (route template, method) -> distribution-spec endpoint id.
_ENDPOINTS: dict[tuple[str, str], str] = {
    ('/v2/', 'GET'): 'end-1', ('/v2/', 'HEAD'): 'end-1',
    ('/v2', 'GET'): 'end-1', ('/v2', 'HEAD'): 'end-1',
    ('/v2/{name}/blobs/{digest}', 'GET'): 'end-2',
    ('/v2/{name}/blobs/{digest}', 'HEAD'): 'end-2',
    ('/v2/{name}/blobs/{digest}', 'DELETE'): 'end-10',
    ('/v2/{name}/manifests/{reference}', 'GET'): 'end-3',
    ('/v2/{name}/manifests/{reference}', 'HEAD'): 'end-3',
    ('/v2/{name}/manifests/{reference}', 'PUT'): 'end-7',
    ('/v2/{name}/manifests/{reference}', 'DELETE'): 'end-9',
    ('/v2/{name}/blobs/uploads/{session_id}', 'PATCH'): 'end-5',
    ('/v2/{name}/blobs/uploads/{session_id}', 'PUT'): 'end-6',
    ('/v2/{name}/blobs/uploads/{session_id}', 'GET'): 'end-13',
    ('/v2/{name}/blobs/uploads/{session_id}', 'DELETE'): 'end-14',
    ('/v2/{name}/tags/list', 'GET'): 'end-8', ('/v2/{name}/tags/list', 'HEAD'): 'end-8',
    ('/v2/{name}/referrers/{digest}', 'GET'): 'end-12',
    ('/v2/{name}/referrers/{digest}', 'HEAD'): 'end-12',
    ('/v2/_catalog', 'GET'): 'catalog', ('/v2/_catalog', 'HEAD'): 'catalog',
}


def endpoint_id(template: str | None, method: str, params: Mapping[str, Any]) -> str:
    if template == '/v2/{name}/blobs/uploads/' and method == 'POST':
        if 'mount' in params:
            return 'end-11'
        return 'end-4b' if 'digest' in params else 'end-4a'
    return _ENDPOINTS.get((template or '', method), 'other')


class Observe:
    """ASGI wrapper counting every HTTP exchange once it is over; it also marks a
    client that went away (oci_ref.http.RequestGuard)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive,
                       send: Send) -> None:
        if scope['type'] != 'http':
            await self.app(scope, receive, send)
            return
        start = perf_counter()
        bytes_in = bytes_out = 0
        status = 0

        async def counted_receive() -> Any:
            nonlocal bytes_in
            event = await receive()
            body = event.get('body')
            if body:
                bytes_in += len(body)
            else:  # RequestGuard's mark, set here (see its docstring)
                mark_disconnect(scope, event)
            return event

        async def counted_send(event: Any) -> None:
            nonlocal bytes_out, status
            body = event.get('body')
            if body:  # only http.response.body events have one
                bytes_out += len(body)
            elif event['type'] == 'http.response.start':
                status = event['status']
            await send(event)

        try:
            await self.app(scope, counted_receive, counted_send)
        finally:
            _observe(scope.get(ENDPOINT_KEY, 'other'), scope['method'], status,
                     perf_counter() - start, bytes_in, bytes_out)


class StorageCollector:
    """Gauges from the metadata store's figures (identical in every worker)."""

    def __init__(self, stats: StoreStats,
                 caches: Mapping[str, tuple[int, int]] | None = None):
        self.stats = stats
        self.caches = caches or {}

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        st = self.stats
        sessions = GaugeMetricFamily('oci_ref_upload_sessions', 'Open upload sessions')
        sessions.add_metric([], st.upload_sessions)
        stored = GaugeMetricFamily('oci_ref_storage_bytes', 'Bytes stored', labels=['kind'])
        stored.add_metric(['blobs'], st.blob_bytes)
        stored.add_metric(['manifests'], st.manifest_bytes)
        stored.add_metric(['uploads'], st.upload_bytes)
        objects = GaugeMetricFamily('oci_ref_objects', 'Objects stored', labels=['kind'])
        for kind, value in (('repositories', st.repositories), ('blobs', st.blobs),
                            ('manifests', st.manifests), ('tags', st.tags)):
            objects.add_metric([kind], value)
        yield from (sessions, stored, objects)
        if self.caches:
            held = GaugeMetricFamily('oci_ref_upstream_cache_bytes',
                                     'Bytes a capped pull-through cache holds (what '
                                     'counts against cache_max_bytes)', labels=['upstream'])
            caps = GaugeMetricFamily('oci_ref_upstream_cache_max_bytes',
                                     'cache_max_bytes of each capped upstream',
                                     labels=['upstream'])
            for name, (usage, cap) in sorted(self.caches.items()):
                held.add_metric([name], usage)
                caps.add_metric([name], cap)
            yield from (held, caps)


def exposition(stats: StoreStats,
               caches: Mapping[str, tuple[int, int]] | None = None) -> bytes:
    """The text exposition: request metrics (merged across workers) + storage.
    Reads the workers' sample files: call it in a thread."""
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess

    instruments()  # registered, so a scrape before any request lists them
    if os.environ.get('PROMETHEUS_MULTIPROC_DIR'):
        requests = CollectorRegistry()
        multiprocess.MultiProcessCollector(requests)
    else:
        requests = REGISTRY
    storage = CollectorRegistry()
    storage.register(StorageCollector(stats, caches))
    return generate_latest(requests) + generate_latest(storage)
