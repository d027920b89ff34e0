"""CSRF protection for the web view's only write, delete.

Browsers resend Basic credentials (and any cookie) on a forged cross-site POST, so
the form carries a token the attacker cannot know: an HMAC over the user, the
action and the target, with its issue time, under a key kept in the metadata store
(made once) so every worker and replica accepts what another issued. A POST also
has to come from our own origin (``Origin`` or ``Sec-Fetch-Site``, when the
browser sends them).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time

from oci_ref.storage.interfaces import MetadataStore, StoreUnavailable

# A confirmation page is good for this long.
TOKEN_TTL = 3600
KEY_NAME = 'ui-csrf'  # the key's name in the metadata store
KEY_BYTES = 32


class Csrf:
    def __init__(self, key: bytes, ttl: int = TOKEN_TTL):
        self.key = key
        self.ttl = ttl

    @classmethod
    def from_store(cls, store: MetadataStore) -> Csrf:
        """The key every worker and replica shares, kept in the metadata store
        (``signing_keys``, name ``ui-csrf``; made at first use, the first stored
        wins), so a confirmation page one replica served is accepted by another.
        Blocking: the web view is built in a thread (mount.py), never on the loop."""
        async def stored() -> bytes | None:
            key = await store.signing_key(KEY_NAME, None)
            if key is None:
                key = await store.signing_key(KEY_NAME, secrets.token_bytes(KEY_BYTES))
            return key

        key = asyncio.run(stored())
        if key is None or len(key) < KEY_BYTES:
            raise StoreUnavailable('web view CSRF key', (
                f'the key in the {store.name} store is short: delete it '
                f"(DELETE FROM signing_keys WHERE name = '{KEY_NAME}'), a new one is "
                'made at the next start'))
        return cls(key)

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
