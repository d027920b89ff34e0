"""What can go wrong with an upstream, and the OCI error each becomes.

The spec's error codes (distribution-spec §Error Codes) have none for a failed
upstream, so a failure while fetching content is reported with the code for the
content that could not be had (BLOB_UNKNOWN, MANIFEST_UNKNOWN, NAME_UNKNOWN) and the
gateway status saying why: 503 unreachable, 504 timed out, 502 answered badly.
Rate limits keep TOOMANYREQUESTS and pass ``Retry-After`` on; a refused login is
DENIED. Every detail names the upstream; none carries a credential or a token.
"""

from __future__ import annotations

from typing import Any, Literal

from oci_ref.errors import ErrorCode, RegistryError

# What was being fetched: decides the "unknown" code.
Kind = Literal['blob', 'manifest', 'tags', 'referrers', 'other']
_UNKNOWN = {
    'blob': ErrorCode.BLOB_UNKNOWN,
    'manifest': ErrorCode.MANIFEST_UNKNOWN,
    'referrers': ErrorCode.MANIFEST_UNKNOWN,
    'tags': ErrorCode.NAME_UNKNOWN,
    'other': ErrorCode.NAME_UNKNOWN,
}


class UpstreamError(Exception):
    """Base: ``upstream`` is its name; ``reason`` says what happened, in words."""

    status = 502
    code: ErrorCode | None = None  # None: the kind's "unknown" code

    def __init__(self, upstream: str, reason: str, *, kind: Kind = 'other',
                 status: int | None = None, **detail: Any):
        self.upstream = upstream
        self.reason = reason
        self.kind = kind
        self.detail = detail
        if status is not None:
            self.status = status
        super().__init__(f'upstream {upstream}: {reason}')

    def headers(self) -> dict[str, str]:
        return {}

    def to_registry_error(self, kind: Kind | None = None) -> RegistryError:
        code = self.code or _UNKNOWN[kind or self.kind]
        return RegistryError(
            code, f'upstream {self.upstream}: {self.reason}',
            detail={'upstream': self.upstream, 'reason': self.reason, **self.detail},
            status=self.status, headers=self.headers())


class UpstreamUnreachable(UpstreamError):
    """No connection (refused, DNS, TLS handshake)."""

    status = 503


class UpstreamTimeout(UpstreamError):
    """Connecting or reading took longer than the upstream's timeouts."""

    status = 504


class UpstreamBadResponse(UpstreamError):
    """A 5xx, an unexpected status, a broken or cut-off response."""

    status = 502


class UpstreamBadContent(UpstreamBadResponse):
    """Bytes whose digest or length differ from what was asked for: never cached,
    never handed to a client as complete."""


class UpstreamNotFound(UpstreamError):
    """The upstream does not have it: a plain 404 of the kind's code."""

    status = 404


class UpstreamRateLimited(UpstreamError):
    """429 from the upstream; ``retry_after`` is its ``Retry-After``, passed on."""

    status = 429
    code = ErrorCode.TOOMANYREQUESTS

    def __init__(self, upstream: str, reason: str, *, retry_after: str | None = None,
                 **kw: Any):
        self.retry_after = retry_after
        super().__init__(upstream, reason, **kw)

    def headers(self) -> dict[str, str]:
        return {'Retry-After': self.retry_after} if self.retry_after else {}


class UpstreamAuthRefused(UpstreamError):
    """The upstream (or its token realm) refused the configured credentials, or
    anonymous access, for this repository."""

    status = 403
    code = ErrorCode.DENIED


class FetchFailed(Exception):
    """The pull-through download a response was streaming from failed (bad bytes,
    upstream cut off): the response must end short of its Content-Length."""


class UpstreamRealmRefused(UpstreamAuthRefused):
    """The upstream named a token realm on a host we will not send credentials to:
    a misconfigured or hostile upstream, so 502."""

    status = 502
