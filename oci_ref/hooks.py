"""Webhook notifications: one JSON event per push, pull, delete and mount.

Requests only enqueue (never wait on the network); a task per worker drains the
bounded queue, POSTing each event to every configured URL with retries and
backoff. When the queue is full the event is dropped and counted
(``oci_ref_hook_events_total{outcome="dropped"}``) rather than slowing a request.

Webhook URLs often carry a token (in the query, the user info, or the path, as
chat services do): logs name a hook by :func:`redact` only.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import httpx

log = logging.getLogger('oci_ref.hooks')

DELIVERY_TIMEOUT = 5.0
DRAIN_ON_SHUTDOWN = 5.0
MEDIA_TYPE = 'application/vnd.oci-ref.events.v1+json'


def redact(url: str, number: int | None = None) -> str:
    """``hook 2 (https://host:port/…)``: scheme, host and port, never user info,
    path, query or fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or '?'
        where = f'{parts.scheme}://{f"[{host}]" if ":" in host else host}'
        if parts.port:
            where += f':{parts.port}'
        if parts.path not in ('', '/') or parts.query or parts.fragment:
            where += '/…'
    except ValueError:
        where = 'an unparsable URL'
    return f'hook {number} ({where})' if number else where


class Notifier:
    def __init__(self, urls: tuple[str, ...], queue_size: int = 1000, retries: int = 3):
        self.urls = urls
        self.queue_size = queue_size
        self.retries = retries
        self._queue: asyncio.Queue[dict[str, Any]] | None = None
        self._task: asyncio.Task[None] | None = None
        if urls:  # the counter (prometheus_client) is built now, not on the loop
            from oci_ref.metrics import instruments

            self._events = instruments().hook_events

    @property
    def enabled(self) -> bool:
        return bool(self.urls)

    def emit(self, action: str, repository: str, *, digest: str | None = None,
             media_type: str | None = None, size: int | None = None,
             tag: str | None = None, source: str | None = None,
             request: dict[str, Any] | None = None) -> None:
        """Queue an event; O(1), never blocks, drops when the queue is full."""
        if not self.urls or self._queue is None:
            return
        target: dict[str, Any] = {'repository': repository}
        for key, value in (('digest', digest), ('mediaType', media_type), ('size', size),
                           ('tag', tag), ('fromRepository', source)):
            if value is not None:
                target[key] = value
        event = {
            'id': str(uuid.uuid4()),
            'timestamp': datetime.now(UTC).isoformat().replace('+00:00', 'Z'),
            'action': action,
            'target': target,
            'request': request or {},
        }
        try:
            self._queue.put_nowait(event)
            self._events.labels('queued').inc()
        except asyncio.QueueFull:
            self._events.labels('dropped').inc()
            log.warning('webhook queue full (%d): dropped %s event', self.queue_size,
                        action)

    def start(self) -> None:
        if self.urls and self._task is None:
            self._queue = asyncio.Queue(self.queue_size)
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Deliver what is queued (for a few seconds at most), then stop."""
        if self._task is None or self._queue is None:
            return
        try:
            await asyncio.wait_for(self._queue.join(), DRAIN_ON_SHUTDOWN)
        except TimeoutError:
            log.warning('webhooks: %d events undelivered at shutdown',
                        self._queue.qsize())
        self._task.cancel()
        self._task = None
        self._queue = None

    async def _run(self) -> None:
        import httpx  # only when hooks are configured: it adds ~50 ms to startup

        assert self._queue is not None
        async with httpx.AsyncClient(timeout=DELIVERY_TIMEOUT) as client:
            while True:
                event = await self._queue.get()
                try:
                    for number, url in enumerate(self.urls, 1):
                        await self._deliver(client, url, number, event)
                finally:
                    self._queue.task_done()

    async def _deliver(self, client: httpx.AsyncClient, url: str, number: int,
                       event: dict[str, Any]) -> None:
        body = {'events': [event]}
        for attempt in range(self.retries + 1):
            try:
                r = await client.post(url, json=body, headers={'Content-Type': MEDIA_TYPE})
                if r.status_code < 300:
                    self._events.labels('delivered').inc()
                    return
                why = f'HTTP {r.status_code}'
            except Exception as ex:  # httpx.HTTPError and anything odd: never raise
                why = type(ex).__name__
            if attempt < self.retries:
                await asyncio.sleep(min(0.5 * 2**attempt, 10))
        self._events.labels('failed').inc()
        log.warning('webhook %s: gave up on %s event after %d attempts (%s)',
                    redact(url, number), event['action'], self.retries + 1, why)
