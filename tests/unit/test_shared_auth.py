"""Access control's state in the metadata store (issue 14), per metadata store: the
token signing key (one for every process, made once, imported from the old key
file, never short) and the failed-login counts every process shares."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os

import pytest

from oci_ref.auth import (
    KEY_BYTES,
    KEY_FILE,
    TOKEN_KEY,
    AuthError,
    TokenIssuer,
    stored_signing_key,
)
from oci_ref.config import Config
from oci_ref.registry import Registry
from oci_ref.storage import open_stores
from oci_ref.storage.interfaces import StoreUnavailable
from oci_ref.variations import redirect_key
from tests.backends import Backend

# The blob store plays no part here: one run per metadata store.
METADATA = pytest.mark.parametrize(
    'backend', ['sqlite+filesystem', 'postgresql+filesystem'], indirect=True)


def _key_of(config_json: str) -> bytes:
    config = Config.from_json(config_json)
    stores = open_stores(config)
    try:
        return asyncio.run(stored_signing_key(stores.meta, config.root))
    finally:
        stores.close()


@METADATA
def test_the_first_key_stored_is_the_one_every_caller_gets(backend: Backend) -> None:
    registry = backend.registry()
    meta = registry.meta

    async def run() -> None:
        assert await meta.signing_key(TOKEN_KEY, None) is None
        first, second = os.urandom(KEY_BYTES), os.urandom(KEY_BYTES)
        assert await meta.signing_key(TOKEN_KEY, first) == first
        assert await meta.signing_key(TOKEN_KEY, second) == first
        assert await meta.signing_key(TOKEN_KEY, None) == first
        assert await meta.signing_key('other', None) is None

    try:
        asyncio.run(run())
    finally:
        registry.close()


@METADATA
def test_processes_racing_to_make_the_key_agree_on_one(backend: Backend) -> None:
    """Six processes (replicas starting at once) make the key together: one key,
    whole, for all of them, and no key file."""
    config = backend.config().to_json()
    with multiprocessing.get_context('spawn').Pool(6) as pool:
        keys = pool.map(_key_of, [config] * 6)
    assert len(set(keys)) == 1 and len(keys[0]) == KEY_BYTES
    assert not list(backend.root.glob(f'{KEY_FILE}*'))


@METADATA
def test_an_old_key_file_is_imported_once(backend: Backend,
                                          caplog: pytest.LogCaptureFixture) -> None:
    """A registry from before the store kept the key: its tokens stay valid; the
    file is renamed, so a key deleted from the store (a rotation) does not come
    back from it. The key is never logged."""
    backend.root.mkdir(parents=True)
    old = os.urandom(KEY_BYTES)
    (backend.root / KEY_FILE).write_bytes(old)
    caplog.set_level(logging.DEBUG)
    registry = backend.registry()
    try:
        assert asyncio.run(stored_signing_key(registry.meta, backend.root)) == old
        assert not (backend.root / KEY_FILE).exists()
        assert (backend.root / f'{KEY_FILE}.imported').read_bytes() == old
        assert 'is now kept in the metadata' in caplog.text
        assert old.hex() not in caplog.text and repr(old) not in caplog.text
        with backend.db() as db:  # rotate: delete it behind the store's back
            db.execute('DELETE FROM signing_keys')
        new = asyncio.run(stored_signing_key(registry.meta, backend.root))
        assert new != old and len(new) == KEY_BYTES
    finally:
        registry.close()


@METADATA
@pytest.mark.parametrize('size', [0, 1, KEY_BYTES - 1])
def test_a_short_key_file_is_refused_never_used(backend: Backend, size: int) -> None:
    backend.root.mkdir(parents=True)
    (backend.root / KEY_FILE).write_bytes(b'k' * size)
    registry = backend.registry()
    try:
        with pytest.raises(AuthError, match=rf'{size} bytes.*remove the file'):
            asyncio.run(stored_signing_key(registry.meta, backend.root))
        assert (backend.root / KEY_FILE).read_bytes() == b'k' * size
        assert asyncio.run(registry.meta.signing_key(TOKEN_KEY, None)) is None
    finally:
        registry.close()


@METADATA
def test_a_short_key_in_the_store_is_refused_and_fails_closed(backend: Backend) -> None:
    """A key cut short in the store stops `serve` (AuthError) and, met by a running
    worker, is a 503 for the token endpoint and for every bearer token: nothing is
    signed or accepted with it."""
    registry = backend.registry()
    try:
        asyncio.run(registry.meta.signing_key(TOKEN_KEY, b'short'))
        with pytest.raises(AuthError, match=r'5 bytes.*DELETE FROM signing_keys'):
            asyncio.run(stored_signing_key(registry.meta, backend.root))
        issuer = TokenIssuer.from_store(registry.meta, backend.root, 'oci-ref', 300)
        with pytest.raises(StoreUnavailable, match='token signing key'):
            asyncio.run(issuer.issue('alice', []))
        with pytest.raises(StoreUnavailable, match='token signing key'):
            asyncio.run(issuer.check('a.b.c'))
    finally:
        registry.close()


@METADATA
def test_issuers_of_different_processes_accept_each_others_tokens(
        backend: Backend) -> None:
    """Two stores on one database (two replicas): a token one issues, the other
    accepts."""
    one, two = backend.registry(), backend.registry()
    try:
        a = TokenIssuer.from_store(one.meta, backend.root, 'oci-ref', 300)
        b = TokenIssuer.from_store(two.meta, backend.root, 'oci-ref', 300)
        token, _, _ = asyncio.run(a.issue('alice', []))
        assert asyncio.run(b.check(token))['sub'] == 'alice'
    finally:
        one.close()
        two.close()


@METADATA
def test_the_blob_redirect_key_is_one_for_every_process(backend: Backend) -> None:
    """The blob-redirect variation signs URLs that any replica must serve: its key
    is made once in the metadata store, and a short one there is a named 503
    (StoreUnavailable), never a URL signed with it."""
    one, two = backend.registry(), backend.registry()
    try:
        keys = [asyncio.run(redirect_key(r.meta)) for r in (one, two, one)]
        assert len(keys[0]) == 32 and keys == [keys[0]] * 3
        with backend.db() as db:
            db.execute("UPDATE signing_keys SET key = ? WHERE name = 'blob-redirect'",
                       [b'short'])
        with pytest.raises(StoreUnavailable, match='blob-redirect key'):
            asyncio.run(redirect_key(two.meta))
    finally:
        one.close()
        two.close()


@METADATA
def test_failed_logins_are_counted_for_every_process(backend: Backend) -> None:
    """Failures counted through one store are seen through another on the same
    database (replicas share one budget); per client; within the window only."""
    one, two = backend.registry(), backend.registry()

    async def run(first: Registry, second: Registry) -> None:
        assert await first.meta.failed_logins('10.0.0.1', 60) == (0, 0.0)
        for meta in (first.meta, second.meta, first.meta):
            await meta.count_failed_login('10.0.0.1', 60)
        await second.meta.count_failed_login('10.0.0.2', 60)
        for meta in (first.meta, second.meta):
            count, age = await meta.failed_logins('10.0.0.1', 60)
            assert count == 3 and 0 <= age < 60
            assert (await meta.failed_logins('10.0.0.2', 60))[0] == 1
            assert await meta.failed_logins('10.0.0.3', 60) == (0, 0.0)
        # A window of 0 s: every failure so far is older than it.
        assert await first.meta.failed_logins('10.0.0.1', 0) == (0, 0.0)
        # Counting one forgets those older than the window, of every client.
        await second.meta.count_failed_login('10.0.0.3', 0)
        assert (await first.meta.failed_logins('10.0.0.1', 60))[0] == 0
        assert (await first.meta.failed_logins('10.0.0.3', 60))[0] == 1
        with backend.db() as db:
            assert db.execute('SELECT count(*) FROM login_failures').fetchone()[0] == 1

    try:
        asyncio.run(run(one, two))
    finally:
        one.close()
        two.close()
