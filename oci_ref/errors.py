"""The spec's error codes, bound to their HTTP status, and the one exception.

distribution-spec §Error Codes: every 4xx body is ``{"errors": [{"code", "message",
"detail"}]}`` and ``code`` MUST be one of the fourteen codes below. Each code is bound
to the status the spec's endpoint table gives it; the few places where the spec asks
for another status (416 for an out-of-order chunk, 413 for an oversized manifest)
pass ``status=`` explicitly.

Refusals that happen before the app runs use the same envelope: headers over 64 KiB
get 431 (http.RequestGuard), and what the HTTP parser refuses gets 400, or 414 for a
request target of 64 KiB or more (oci_ref.protocol, wrapping uvicorn's httptools
protocol). The one exception: a connection so broken that no HTTP response can be
read (a TLS handshake on a plain-HTTP port) still receives that 400 as plain bytes.

Server-side failures (5xx) are outside that table: the spec's codes describe what a
client did wrong. A store that cannot answer (a database lock held past the busy
timeout, a disk or an engine failing) is :class:`ExtensionCode` ``UNAVAILABLE`` with
503 and ``Retry-After``, the code CNCF distribution uses for the same case; its
``detail`` names the store. Clients act on the status; none reads 5xx codes.
"""

from __future__ import annotations

import enum
import json
from typing import Any


class _Code:
    """What both tables' members are: (id, status, message)."""

    value: tuple[str, int, str]

    @property
    def spec_id(self) -> str:
        return self.value[0]

    @property
    def status(self) -> int:
        return self.value[1]

    @property
    def message(self) -> str:
        return self.value[2]


class ErrorCode(_Code, enum.Enum):
    """code-1 … code-14 of distribution-spec §Error Codes: (id, status, message)."""

    BLOB_UNKNOWN = ('code-1', 404, 'blob unknown to registry')
    BLOB_UPLOAD_INVALID = ('code-2', 400, 'blob upload invalid')
    BLOB_UPLOAD_UNKNOWN = ('code-3', 404, 'blob upload unknown to registry')
    DIGEST_INVALID = ('code-4', 400, 'provided digest did not match uploaded content')
    MANIFEST_BLOB_UNKNOWN = (
        'code-5',
        400,
        'manifest references a manifest or blob unknown to registry',
    )
    MANIFEST_INVALID = ('code-6', 400, 'manifest invalid')
    MANIFEST_UNKNOWN = ('code-7', 404, 'manifest unknown to registry')
    NAME_INVALID = ('code-8', 400, 'invalid repository name')
    NAME_UNKNOWN = ('code-9', 404, 'repository name not known to registry')
    SIZE_INVALID = ('code-10', 400, 'provided length did not match content length')
    UNAUTHORIZED = ('code-11', 401, 'authentication required')
    DENIED = ('code-12', 403, 'requested access to the resource is denied')
    UNSUPPORTED = ('code-13', 405, 'the operation is unsupported')
    TOOMANYREQUESTS = ('code-14', 429, 'too many requests')


class ExtensionCode(_Code, enum.Enum):
    """Codes for 5xx answers only (never a 4xx): (id, status, message)."""

    UNAVAILABLE = ('ext-unavailable', 503, 'service unavailable')


Code = ErrorCode | ExtensionCode


class ErrorEntry:
    """One element of the ``errors`` array."""

    __slots__ = ('code', 'detail', 'message')

    def __init__(self, code: Code, message: str | None = None, detail: Any = None):
        self.code = code
        self.message = message or code.message
        self.detail = detail

    def to_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {'code': self.code.name, 'message': self.message}
        if self.detail is not None:
            entry['detail'] = self.detail
        return entry


class RegistryError(Exception):
    """Raised anywhere (HTTP-free core included); rendered once, by the app.

    ``status`` overrides the code's default status; ``headers`` are added to the
    response (e.g. ``Range`` and ``Location`` on a 416, so clients can resume).
    """

    def __init__(
        self,
        code: Code,
        message: str | None = None,
        detail: Any = None,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        more: list[ErrorEntry] | None = None,
    ):
        self.entries = [ErrorEntry(code, message, detail), *(more or [])]
        self.status = status or code.status
        self.headers = dict(headers or {})
        super().__init__(self.entries[0].message)

    @classmethod
    def of(cls, entries: list[ErrorEntry], *, status: int | None = None) -> RegistryError:
        """One response carrying several errors (e.g. one MANIFEST_BLOB_UNKNOWN each)."""
        first, *rest = entries
        return cls(first.code, first.message, first.detail, status=status, more=rest)

    @property
    def code(self) -> Code:
        return self.entries[0].code

    def body(self) -> bytes:
        return json.dumps({'errors': [e.to_dict() for e in self.entries]}).encode()


def store_unavailable(store: str, reason: str) -> RegistryError:
    """503 naming the store that could not answer; clients retry after a moment."""
    return RegistryError(
        ExtensionCode.UNAVAILABLE, f'{store} is unavailable: {reason}',
        detail={'store': store, 'reason': reason}, status=503,
        headers={'Retry-After': '1'})


def status_code_for(status: int) -> ErrorCode:
    """The spec code used when the HTTP layer (not our code) refuses a request."""
    return {
        401: ErrorCode.UNAUTHORIZED,
        403: ErrorCode.DENIED,
        413: ErrorCode.SIZE_INVALID,
        429: ErrorCode.TOOMANYREQUESTS,
    }.get(status, ErrorCode.UNSUPPORTED)
