"""uvicorn's httptools protocol, answering its own refusals in the spec's envelope,
and naming a TLS handshake on a plain-HTTP port.

A request the HTTP parser refuses never reaches the ASGI app, so RequestGuard
cannot answer it; uvicorn then sends a plain-text "Invalid HTTP request received."
The commonest such request is a request line longer than 65,535 bytes: the parser's
URL splitter (``httptools.parse_url``) keeps offsets in 16 bits. Here the same
refusal carries the distribution-spec error body (§Error Codes), 414 for the long
URL (RFC 9110 §15.5.15) and 400 otherwise.

Clients try HTTPS first (docker, podman, skopeo without an insecure-registry setting).
A TLS connection opens with a handshake record: content type 22 (``0x16``) and
protocol version major 3 (``0x03``; RFC 8446 §5.1, also TLS 1.0-1.2); no HTTP request
line starts with that byte. On a plain port we log what happened and answer
uvicorn's plain-text 400: Go clients (docker, skopeo, crane) read it as "server gave
HTTP response to HTTPS client", which names the fix, and docker's insecure-registry
fallback depends on exactly that.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from oci_ref.errors import ErrorCode, RegistryError
from oci_ref.http import ABORT_KEY

TLS_HANDSHAKE = b'\x16\x03'

log = logging.getLogger('uvicorn.error')

# httptools.parse_url refuses URLs of 2^16 bytes and more.
URL_MAX = 65535


def refusal(msg: str, url_length: int) -> tuple[int, bytes]:
    """(status, body) for a request the HTTP parser refused."""
    if url_length > URL_MAX:
        return 414, RegistryError(
            ErrorCode.UNSUPPORTED, 'request line too long',
            detail={'rule': f'request targets are at most {URL_MAX} bytes',
                    'received': url_length, 'spec': 'RFC 9110 §15.5.15'},
            status=414).body()
    return 400, RegistryError(
        ErrorCode.UNSUPPORTED, 'malformed HTTP request',
        detail={'reason': msg, 'spec': 'RFC 9112'}, status=400).body()


def reset_transport(transport: Any) -> None:
    """Close a connection with a TCP RST (SO_LINGER 0), as a crashed peer or a
    middlebox does, instead of a clean FIN."""
    sock = transport.get_extra_info('socket')
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    transport.abort()


class OCIHttpToolsProtocol(HttpToolsProtocol):
    """httptools, with the parser's refusals in the spec's error envelope, and a way
    for the ASGI app to reset the connection (fault injection, oci_ref/faults.py)."""

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        # The cycle holds this same scope dict; its task has not run yet.
        transport = self.transport
        extra: dict[str, Any] = self.scope  # type: ignore[assignment]  # our own key
        extra[ABORT_KEY] = lambda: reset_transport(transport)

    def send_400_response(self, msg: str) -> None:
        status, body = refusal(msg, len(getattr(self, 'url', b'') or b''))
        phrase = HTTPStatus(status).phrase
        content = [f'HTTP/1.1 {status} {phrase}\r\n'.encode()]
        for name, value in self.server_state.default_headers:
            content.extend([name, b': ', value, b'\r\n'])
        content.extend([
            b'content-type: application/json\r\n',
            b'docker-distribution-api-version: registry/2.0\r\n',
            b'content-length: ' + str(len(body)).encode() + b'\r\n',
            b'connection: close\r\n',
            b'\r\n',
            body,
        ])
        self.transport.write(b''.join(content))
        self.transport.close()


class PlainHTTPProtocol(OCIHttpToolsProtocol):
    """The protocol of a plain-HTTP port: TLS handshakes are named as such."""

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
                # uvicorn's own plain-text 400: what Go clients recognise.
                HttpToolsProtocol.send_400_response(
                    self, 'This port speaks plain HTTP, not TLS.')
                return
        super().data_received(data)


def _address(addr: tuple[str, int | None] | None) -> str:
    if not addr:
        return ''
    host, port = addr
    return f'[{host}]:{port}' if ':' in host else f'{host}:{port}'
