"""oci_ref.auth without HTTP: the htpasswd file (long passwords, malformed edits,
the dummy hash's cost) and the token issuer (never with a short key)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from pathlib import Path

import bcrypt
import jwt
import pytest

from oci_ref.auth import KEY_BYTES, AuthError, Htpasswd, TokenIssuer
from tests.interop.auth import htpasswd_entry, write_htpasswd

USERS = {'alice': 'alice-pw', 'bob': 'bob-pw'}


@pytest.fixture
def checked(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every hash bcrypt.checkpw is asked to check (the real check still runs)."""
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def spy(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return bool(real(password, hashed))

    monkeypatch.setattr(bcrypt, 'checkpw', spy)
    return calls


def cost_of(hashed: bytes | str) -> int:
    text = hashed.decode() if isinstance(hashed, bytes) else hashed
    m = re.fullmatch(r'\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}', text)
    assert m, text
    return int(m[1])


# ------------------------------------------------------------ long passwords ----
@pytest.mark.parametrize('length', [73, 200, 5000])
def test_a_password_over_72_bytes_is_a_failed_check_not_an_exception(
        tmp_path: Path, length: int) -> None:
    """bcrypt >= 5 raises ValueError past 72 bytes (a 500 before): now it is just a
    wrong password, for known and unknown users alike."""
    long = 'p' * length
    users = {**USERS, 'carol': 'c' * 72}
    htpasswd = Htpasswd(write_htpasswd(tmp_path / 'htpasswd', users, cost=4))
    assert htpasswd.verify('carol', 'c' * 72)  # 72 bytes still work
    for user in ('alice', 'carol', 'nobody'):
        assert htpasswd.verify(user, long) is False
    # Multi-byte characters count in bytes: 37 x 2 bytes = 74.
    assert htpasswd.verify('alice', '\u00e9' * 37) is False


# ---------------------------------------------------------- malformed edits ----
def test_a_malformed_edit_keeps_the_last_good_file_and_is_logged_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_htpasswd(tmp_path / 'htpasswd', USERS, cost=4)
    htpasswd = Htpasswd(path)
    assert htpasswd.verify('alice', USERS['alice'])
    good = path.read_text()
    # Line 3: a plaintext password where the hash should be (never logged).
    path.write_text(good + 'carol:carol-plaintext-Secret-99\n' + htpasswd_entry(
        'dave', 'dave-pw', 4) + '\n')
    caplog.set_level(logging.INFO, logger='oci_ref.auth')
    for _ in range(3):
        assert htpasswd.verify('alice', USERS['alice'])  # the last good file
        assert not htpasswd.verify('dave', 'dave-pw')  # nothing of the bad one
    assert htpasswd.error is not None and 'line 3' in htpasswd.error
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert 'line 3' in errors[0].getMessage()
    assert 'carol-plaintext-Secret-99' not in caplog.text
    # Fixed: the new file is used and the error clears.
    path.write_text(good + htpasswd_entry('dave', 'dave-pw', 4) + '\n')
    assert htpasswd.verify('dave', 'dave-pw')
    assert htpasswd.error is None


@pytest.mark.parametrize('line', [
    'alice', 'alice:', ':$2y$05$' + 'a' * 53, 'alice:$2y$05$short',
    'alice:$2y$03$' + 'a' * 53, 'alice:$2y$32$' + 'a' * 53, 'alice:{SHA}abc',
    'alice:$apr1$salt$hash', 'alice:plaintext'])
def test_a_malformed_file_refuses_to_load(tmp_path: Path, line: str) -> None:
    """At start a bad file is an error naming the line (bcrypt would otherwise
    raise on every login with it: a 500 per request)."""
    path = tmp_path / 'htpasswd'
    path.write_text(htpasswd_entry('bob', 'bob-pw', 4) + '\n' + line + '\n')
    with pytest.raises(AuthError, match='line 2'):
        Htpasswd(path)


# ---------------------------------------------------------- the dummy hash ----
def test_unknown_users_are_checked_at_the_costs_of_the_real_entries(
        tmp_path: Path, checked: list[bytes]) -> None:
    """No timing oracle by cost: every unknown name is checked against a hash at
    the cost of some real entry (each cost of the file turns up), the same cost
    every time for the same name. Compared by cost parameter, not by timing."""
    users = {'u4': 'pw', 'u5': 'pw', 'u6': 'pw'}
    path = tmp_path / 'htpasswd'
    path.write_text(''.join(htpasswd_entry(u, p, int(u[1])) + '\n'
                            for u, p in users.items()))
    htpasswd = Htpasswd(path)
    real = {cost_of(line.split(':', 1)[1]) for line in path.read_text().splitlines()}
    assert real == {4, 5, 6}
    seen: dict[str, int] = {}
    for i in range(60):
        name = f'nobody-{i}'
        checked.clear()
        assert not htpasswd.verify(name, 'pw')
        assert not htpasswd.verify(name, 'other')
        assert len(checked) == 2
        costs = {cost_of(h) for h in checked}
        assert len(costs) == 1, f'{name}: cost changed between attempts {costs}'
        seen[name] = costs.pop()
    assert set(seen.values()) == real, seen
    # Known users are checked against their own hash.
    checked.clear()
    assert htpasswd.verify('u6', 'pw')
    assert [cost_of(h) for h in checked] == [6]


def test_a_single_cost_file_gives_every_unknown_user_that_cost(
        tmp_path: Path, checked: list[bytes]) -> None:
    htpasswd = Htpasswd(write_htpasswd(tmp_path / 'htpasswd', USERS, cost=7))
    for name in ('x', 'y', 'admin', 'root'):
        assert not htpasswd.verify(name, 'pw')
    assert [cost_of(h) for h in checked] == [7] * 4


# ------------------------------------------------------------ signing key ----
# Where the key is kept (the metadata store, per backend): tests/unit/test_shared_auth.py.
@pytest.mark.parametrize('size', [0, 1, KEY_BYTES - 1])
def test_an_issuer_refuses_a_short_key(size: int) -> None:
    with pytest.raises(AuthError, match=f'{size} bytes'):
        TokenIssuer(b'k' * size, 'oci-ref', 300)


def test_pyjwt_refuses_an_empty_hmac_key() -> None:
    """The pinned PyJWT (>= 2.13) raises on an empty key instead of signing (older
    versions signed with b'', so anyone could forge tokens)."""
    with pytest.raises(jwt.InvalidKeyError):
        jwt.encode({'sub': 'x'}, b'', algorithm='HS256')
    token = jwt.encode({'sub': 'x'}, b'k' * KEY_BYTES, algorithm='HS256')
    with pytest.raises(jwt.InvalidKeyError):
        jwt.decode(token, b'', algorithms=['HS256'])


def test_the_dependency_pin_is_the_one_that_refuses_empty_keys() -> None:
    pyproject = Path(__file__).parents[2] / 'pyproject.toml'
    pins = re.findall(r'"PyJWT>=([\d.]+)', pyproject.read_text())
    assert pins and tuple(map(int, pins[0].split('.'))) >= (2, 13), pins


def test_token_issuer_signs_with_a_full_key() -> None:
    issuer = TokenIssuer(os.urandom(KEY_BYTES), 'oci-ref', 300)

    async def run() -> None:
        token, ttl, _ = await issuer.issue('alice', [])
        assert (await issuer.check(token))['sub'] == 'alice'
        assert ttl == 300
        with pytest.raises(AuthError, match='wrong kind'):
            await issuer.check(token, refresh=True)

    asyncio.run(run())
