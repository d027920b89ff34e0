"""CSRF protection for the web view's only write, delete.

Browsers resend Basic credentials (and any cookie) on a forged cross-site POST, so
the form carries a token the attacker cannot know: an HMAC over the user, the
action and the target, with its issue time, under a key kept in the storage root
(``<root>/.ui-csrf-key``, made once, mode 0600) so every worker accepts what
another issued. A POST also has to come from our own origin (``Origin`` or
``Sec-Fetch-Site``, when the browser sends them).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

# A confirmation page is good for this long.
TOKEN_TTL = 3600


class Csrf:
    def __init__(self, key: bytes, ttl: int = TOKEN_TTL):
        self.key = key
        self.ttl = ttl

    @classmethod
    def for_root(cls, root: Path) -> Csrf:
        """The key of ``root``, made on first use. Written whole under a temporary
        name and hard-linked into place, so a worker starting at the same moment
        never reads a half-written key: the first link wins, everyone reads it."""
        path = root / '.ui-csrf-key'
        if not path.exists():
            tmp = root / f'.ui-csrf-key.{os.getpid()}.{secrets.token_hex(4)}'
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, 'wb') as f:
                    f.write(secrets.token_bytes(32))
                    f.flush()
                    os.fsync(f.fileno())
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, path)
            finally:
                tmp.unlink()
        return cls(path.read_bytes())

    def _mac(self, issued: int, *parts: str) -> str:
        msg = '\0'.join([str(issued), *parts]).encode()
        return hmac.new(self.key, msg, hashlib.sha256).hexdigest()

    def issue(self, *parts: str, now: float | None = None) -> str:
        """A token for ``parts`` (who, what, on which target)."""
        issued = int(time.time() if now is None else now)
        return f'{issued}.{self._mac(issued, *parts)}'

    def valid(self, token: str, *parts: str, now: float | None = None) -> bool:
        issued_text, _, mac = token.partition('.')
        if not issued_text.isascii() or not issued_text.isdigit() or len(issued_text) > 12:
            return False
        issued = int(issued_text)
        age = (time.time() if now is None else now) - issued
        if not 0 <= age <= self.ttl:
            return False
        return hmac.compare_digest(mac, self._mac(issued, *parts))


def same_origin(origin: str | None, fetch_site: str | None, host: str,
                scheme: str) -> bool:
    """Fetch metadata first (Sec-Fetch-Site), else Origin; a browser old enough to
    send neither is left to the token alone."""
    if fetch_site is not None:
        return fetch_site in ('same-origin', 'none')
    if origin is None:
        return True
    return origin == f'{scheme}://{host}'
