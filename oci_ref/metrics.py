"""Prometheus metrics: requests by spec endpoint id and status, latency, bytes in and
out, open upload sessions and storage.

Request metrics are counted at the ASGI layer (:class:`Observe`), the one place that
sees the exact body bytes and the final status. With several workers ``oci-ref
serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` and every worker writes its samples there;
the storage and session gauges are read from the metadata store at scrape time, so
they are the same whichever worker answers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from oci_ref.http import ASGIApp, Receive, Send
from oci_ref.storage.interfaces import StoreStats

ENDPOINT_KEY = 'oci_ref.endpoint'
CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'

REQUESTS = Counter(
    'oci_ref_requests', 'HTTP requests by spec endpoint id, method and status',
    ['endpoint', 'method', 'status'],
)
LATENCY = Histogram(
    'oci_ref_request_duration_seconds', 'Time to answer, by spec endpoint id',
    ['endpoint'],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
             60, 300),
)
BYTES_IN = Counter('oci_ref_received_bytes', 'Request body bytes', ['endpoint'])
BYTES_OUT = Counter('oci_ref_sent_bytes', 'Response body bytes', ['endpoint'])

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
    """ASGI wrapper counting every HTTP exchange once it is over."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive,
                       send: Send) -> None:
        if scope['type'] != 'http':
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        bytes_in = bytes_out = 0
        status = 0

        async def counted_receive() -> Any:
            nonlocal bytes_in
            event = await receive()
            bytes_in += len(event.get('body', b''))
            return event

        async def counted_send(event: Any) -> None:
            nonlocal bytes_out, status
            if event['type'] == 'http.response.start':
                status = event['status']
            elif event['type'] == 'http.response.body':
                bytes_out += len(event.get('body', b''))
            await send(event)

        try:
            await self.app(scope, counted_receive, counted_send)
        finally:
            endpoint = scope.get(ENDPOINT_KEY, 'other')
            REQUESTS.labels(endpoint, scope['method'], str(status or 500)).inc()
            LATENCY.labels(endpoint).observe(time.perf_counter() - start)
            if bytes_in:
                BYTES_IN.labels(endpoint).inc(bytes_in)
            if bytes_out:
                BYTES_OUT.labels(endpoint).inc(bytes_out)


class StorageCollector(Collector):
    """Gauges from the metadata store's figures (identical in every worker)."""

    def __init__(self, stats: StoreStats):
        self.stats = stats

    def collect(self) -> Iterable[Metric]:
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


def exposition(stats: StoreStats) -> bytes:
    """The text exposition: request metrics (merged across workers) + storage.
    Reads the workers' sample files: call it in a thread."""
    if os.environ.get('PROMETHEUS_MULTIPROC_DIR'):
        requests = CollectorRegistry()
        multiprocess.MultiProcessCollector(requests)
    else:
        requests = REGISTRY
    storage = CollectorRegistry()
    storage.register(StorageCollector(stats))
    return generate_latest(requests) + generate_latest(storage)
