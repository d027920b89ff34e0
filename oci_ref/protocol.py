"""The HTTP protocol ``oci-ref serve`` runs on a plain-HTTP port: uvicorn's httptools
protocol, plus one clear log line when a client starts TLS there.

Clients try HTTPS first (docker, podman, skopeo without an insecure-registry setting).
uvicorn then logs ``Invalid HTTP request received.``, which names neither the cause
nor the fix. A TLS connection opens with a handshake record: content type 22
(``0x16``) and protocol version major 3 (``0x03``; RFC 8446 §5.1, also TLS 1.0-1.2);
no HTTP request line starts with that byte. We log what happened instead and still
answer uvicorn's plain-text 400: Go clients (docker, skopeo, crane) read it as
"server gave HTTP response to HTTPS client", which names the fix, and docker's
insecure-registry fallback depends on exactly that.
"""

from __future__ import annotations

import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

TLS_HANDSHAKE = b'\x16\x03'

log = logging.getLogger('uvicorn.error')


class PlainHTTPProtocol(HttpToolsProtocol):
    """httptools, with TLS handshakes on this plain port named as such."""

    _first_data = True

    def data_received(self, data: bytes) -> None:
        if self._first_data:
            self._first_data = False
            if data.startswith(TLS_HANDSHAKE):
                client = _address(self.client) or 'a client'
                server = _address(self.server) or 'port'
                log.warning(
                    '%s tried TLS (HTTPS) on plain-HTTP %s: use http:// or the '
                    "client's insecure-registry setting (docker/podman: "
                    'insecure-registries; skopeo: --tls-verify=false), or serve '
                    'HTTPS with --tls-cert and --tls-key', client, server)
                self.send_400_response('This port speaks plain HTTP, not TLS.')
                return
        super().data_received(data)


def _address(addr: tuple[str, int | None] | None) -> str:
    if not addr:
        return ''
    host, port = addr
    return f'[{host}]:{port}' if ':' in host else f'{host}:{port}'
