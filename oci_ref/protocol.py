"""uvicorn's httptools protocol, answering its own refusals in the spec's envelope.

A request the HTTP parser refuses never reaches the ASGI app, so RequestGuard
cannot answer it; uvicorn then sends a plain-text "Invalid HTTP request received."
The commonest such request is a request line longer than 65,535 bytes: the parser's
URL splitter (``httptools.parse_url``) keeps offsets in 16 bits. Here the same
refusal carries the distribution-spec error body (§Error Codes), 414 for the long
URL (RFC 9110 §15.5.15) and 400 otherwise.
"""

from __future__ import annotations

from http import HTTPStatus

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from oci_ref.errors import ErrorCode, RegistryError

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


class OCIHttpToolsProtocol(HttpToolsProtocol):
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
