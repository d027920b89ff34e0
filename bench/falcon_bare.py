"""The framework's ceiling for manifest HEAD/GET (issue 17): a bare Falcon ASGI app that
answers every path with the same 1 KiB body, run on the same uvicorn as oci-ref
(bench/servers.py starts it). Whatever oci-ref serves below this rate is its own
per-request work. Imports only Falcon: it runs as uvicorn's top-level module."""

from __future__ import annotations

import hashlib

import falcon
import falcon.asgi

_HEAD, _TAIL = b'{"schemaVersion":2,"annotations":{"pad":"', b'"}}'
BODY = _HEAD + b'x' * (1024 - len(_HEAD) - len(_TAIL)) + _TAIL  # 1 KiB of JSON
DIGEST = 'sha256:' + hashlib.sha256(BODY).hexdigest()
MEDIA_TYPE = 'application/vnd.oci.image.manifest.v1+json'


async def answer(req: falcon.asgi.Request, resp: falcon.asgi.Response, **_: str) -> None:
    """The headers a manifest answer carries (type, length, digest), and the body
    unless the method is HEAD."""
    resp.content_type = MEDIA_TYPE
    resp.set_header('Docker-Content-Digest', DIGEST)
    if req.method == 'HEAD':
        resp.content_length = len(BODY)
    else:
        resp.data = BODY


app = falcon.asgi.App()
# Falcon types a sink's resp as optional; a sink always gets one.
app.add_sink(answer, prefix='/')  # type: ignore[arg-type]
