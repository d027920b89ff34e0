"""``/ui`` beside the API, with the web view built on its first request.

The web view needs jinja2 and its templates; the API does not. Building it when
someone first opens ``/ui`` keeps both out of the server's start (startup to the
first 200 and RSS, issue 17). The build imports modules and reads the CSRF key file,
so it runs in a thread: the event loop never waits on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from oci_ref.http import ASGIApp, Receive, Send

PREFIX = '/ui'


class Mount:
    """ASGI: ``/ui`` and below to the web view, everything else (lifespan events
    included) to the API."""

    def __init__(self, api: ASGIApp, build_ui: Callable[[], ASGIApp]):
        self.api = api
        self._build_ui = build_ui
        self._ui: ASGIApp | None = None
        self._building: asyncio.Lock | None = None

    async def ui(self) -> ASGIApp:
        if self._ui is None:
            self._building = self._building or asyncio.Lock()
            async with self._building:  # one build, however many first requests
                if self._ui is None:
                    self._ui = await asyncio.to_thread(self._build_ui)
        return self._ui

    def __call__(self, scope: Any, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain function returning the awaitable: the API's requests pay no
        # coroutine of this wrapper's own.
        path = scope.get('path', '') if scope['type'] == 'http' else ''
        if path == PREFIX or path.startswith(PREFIX + '/'):
            return self._serve_ui(scope, receive, send)
        return self.api(scope, receive, send)

    async def _serve_ui(self, scope: Any, receive: Receive, send: Send) -> None:
        from oci_ref.metrics import ENDPOINT_KEY

        scope[ENDPOINT_KEY] = 'ui'
        await (await self.ui())(scope, receive, send)
