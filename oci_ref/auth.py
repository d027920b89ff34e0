"""Who may do what: credentials (htpasswd, bearer tokens) and per-repository rules.

HTTP-free: :class:`Access` answers "may this principal do these actions on this
repository", :class:`Authenticator` turns an ``Authorization`` header into a
principal, and :class:`TokenIssuer` signs and checks the bearer tokens of the Docker
token protocol (distribution's docs/spec/auth/token.md).

The access file (``--access FILE``, TOML)::

    [groups]
    devs = ["alice", "bob"]

    [[rule]]                      # first matching rule wins
    repository = "team/*"         # fnmatch glob; "*" also spans "/"
    principals = ["@devs", "carol"]
    actions = ["pull", "push", "delete"]

    [[rule]]
    repository = "*"
    principals = ["*"]            # any authenticated user
    actions = ["pull"]

    [catalog]
    principals = ["@devs"]        # may list /v2/_catalog (filtered by pull rights)

Without an access file every authenticated user may do everything. Anonymous
callers may pull where ``anonymous_read`` is on (a rule with principal
``"anonymous"`` grants them more precisely).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fnmatch
import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from oci_ref.storage.interfaces import MetadataStore, StoreUnavailable

# bcrypt and jwt (with cryptography, a tenth of the start) are imported where they are
# used: with auth off, or without htpasswd, a server never needs them.

log = logging.getLogger('oci_ref.auth')

ACTIONS = ('pull', 'push', 'delete')
ANONYMOUS = 'anonymous'
# bcrypt reads the first 72 bytes of a password; bcrypt >= 5 raises on longer ones.
MAX_PASSWORD_BYTES = 72
# An htpasswd -B entry: $2y$ (or $2a$/$2b$), a two-digit cost, 22 salt + 31 hash chars.
_ENTRY = re.compile(r'\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}')
KEY_FILE = '.token-key'  # where the key was kept before the metadata store: imported
TOKEN_KEY = 'token'  # the key's name in the metadata store
KEY_BYTES = 32  # HS256 wants a key at least as long as its hash (RFC 7518 §3.2)


class AuthError(Exception):
    pass


@dataclass(frozen=True)
class Principal:
    name: str  # 'anonymous' when no credentials were given
    groups: frozenset[str] = frozenset()
    # Token holders carry the scopes the token grants: {repository: actions}.
    scopes: dict[str, frozenset[str]] | None = None
    catalog: bool = False

    @property
    def anonymous(self) -> bool:
        """No credentials at all. A token holder is never anonymous, even with an
        anonymous token: /v2/ admits any valid token (docker login relies on it)."""
        return self.name == ANONYMOUS and self.scopes is None

    def identity(self) -> Principal:
        """Who the rules apply to (a token holder's user, not the token's scopes)."""
        return Principal(self.name, self.groups) if self.scopes is not None else self


class WatchedFile:
    """A file re-read when it changes (``reload``, blocking: call it from a thread).

    A version that does not parse is never half-used: the last good one stays in
    force, why is logged once (a line number, never the line: it may hold a
    password), and :attr:`error` says why, for ``/readyz``. At start a bad file is
    an AuthError.
    """

    kind = 'file'

    def __init__(self, path: Path):
        self.path = path
        self.error: str | None = None
        self._failed: tuple[int, int, int] | None = None  # last stamp that did not parse
        self._lock = threading.Lock()
        try:
            stat = path.stat()
            value = self._parse()
        except OSError as ex:
            raise AuthError(f'{path}: cannot read: {ex.strerror}') from None
        self._stamp = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        self._use(value)

    def _parse(self) -> Any:
        raise NotImplementedError

    def _use(self, value: Any) -> None:
        raise NotImplementedError

    def reload(self) -> None:
        with self._lock:
            try:
                stat = self.path.stat()
                stamp = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
                if stamp in (self._stamp, self._failed):
                    return
                value = self._parse()
            except (OSError, AuthError) as ex:
                why = str(ex) if isinstance(ex, AuthError) else (
                    f'{self.path}: cannot read: {ex.strerror}')
                if why != self.error:  # once per problem, not once per request
                    log.error('%s; still using the last good copy', why)
                self.error = why
                self._failed = stamp if isinstance(ex, AuthError) else None
                return
            self._use(value)
            self._stamp, self.error = stamp, None
            log.info('%s: reloaded (%s)', self.path, self.kind)


class Htpasswd(WatchedFile):
    """``user:hash`` lines as ``htpasswd -B`` writes them (bcrypt only), re-read on
    change at every password check (which runs in a worker thread)."""

    kind = 'users'

    def __init__(self, path: Path):
        self._users: dict[str, str] = {}
        self._costs: list[int] = []  # the cost of each user's hash
        self._pick = secrets.token_bytes(16)  # keys the per-name choice of dummy cost
        import bcrypt  # noqa: F401  at startup, so no request pays for the import

        super().__init__(path)

    def _parse(self) -> dict[str, str]:
        users = {}
        for number, line in enumerate(self.path.read_text(errors='replace').splitlines(),
                                      1):
            line = line.strip()
            if not line or line.startswith('#'):
                continue
            user, sep, hashed = line.partition(':')
            m = _ENTRY.fullmatch(hashed)
            if not sep or not user or m is None or not 4 <= int(m[1]) <= 31:
                raise AuthError(f'{self.path}: line {number}: not a bcrypt entry '
                                f'(user:hash, as htpasswd -B writes)')
            users[user] = hashed
        return users

    def _use(self, users: dict[str, str]) -> None:
        self._users = users
        self._costs = [int(h[4:6]) for h in users.values()]

    def has_user(self, user: str) -> bool:
        self.reload()
        return user in self._users

    def dummy_hash(self, user: str) -> str:
        """What an unknown ``user``'s password is checked against: a hash at the cost
        of one of the real entries, chosen by a keyed hash of the name, so an unknown
        name costs what some real user's login costs, and the same every time (no
        timing oracle, even when the entries' costs differ)."""
        costs = self._costs or [10]
        pick = hmac.new(self._pick, user.encode(), hashlib.sha256).digest()
        cost = costs[int.from_bytes(pick[:8], 'big') % len(costs)]
        # A random salt and digest: checkpw does the full work and can never match.
        filler = base64.b64encode(secrets.token_bytes(24)).decode()
        tail = re.sub('[^./A-Za-z0-9]', '.', filler)[:31]
        import bcrypt

        return bcrypt.gensalt(rounds=cost).decode() + tail

    def verify(self, user: str, password: str) -> bool:
        """Blocking (bcrypt takes 2-400 ms): call it from a thread, never the loop."""
        self.reload()
        secret = password.encode()
        if len(secret) > MAX_PASSWORD_BYTES:
            # Refused, not truncated: htpasswd would have cut it, we never guess.
            return False
        hashed = self._users.get(user)
        # bcrypt runs either way (against a dummy hash for unknown users), so a
        # wrong user name takes as long as a wrong password.
        import bcrypt

        ok = bcrypt.checkpw(secret, (hashed or self.dummy_hash(user)).encode())
        return ok and hashed is not None


@dataclass(frozen=True)
class Rule:
    repository: str
    principals: tuple[str, ...]
    actions: frozenset[str]


@dataclass
class Access:
    rules: list[Rule] = field(default_factory=list)
    groups: dict[str, frozenset[str]] = field(default_factory=dict)
    catalog: tuple[str, ...] = ('*',)
    anonymous_read: bool = False
    configured: bool = False  # an access file was given

    @classmethod
    def load(cls, path: Path | None, *, anonymous_read: bool = False) -> Access:
        if path is None:
            return cls(anonymous_read=anonymous_read)
        import tomllib  # only with an access file

        try:
            with open(path, 'rb') as f:
                data = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as ex:
            raise AuthError(f'cannot read access file {path}: {ex}') from None
        groups = {g: frozenset(map(str, members))
                  for g, members in data.get('groups', {}).items()}
        rules = []
        for i, raw in enumerate(data.get('rule', []), 1):
            actions = frozenset(raw.get('actions', []))
            unknown = actions - set(ACTIONS)
            if unknown or 'repository' not in raw or not raw.get('principals'):
                raise AuthError(f'{path}: rule {i} needs repository, principals and '
                                f'actions among {", ".join(ACTIONS)}')
            rules.append(Rule(str(raw['repository']), tuple(map(str, raw['principals'])),
                              actions))
        catalog = tuple(map(str, data.get('catalog', {}).get('principals', [])))
        return cls(rules, groups, catalog, anonymous_read, configured=True)

    def groups_of(self, user: str) -> frozenset[str]:
        return frozenset(g for g, members in self.groups.items() if user in members)

    def _matches(self, principal: Principal, names: Iterable[str]) -> bool:
        unauthenticated = principal.name == ANONYMOUS
        for name in names:
            if name == ANONYMOUS and unauthenticated:
                return True
            if unauthenticated:
                continue
            if name == '*' or name == principal.name:
                return True
            if name.startswith('@') and name[1:] in principal.groups:
                return True
        return False

    def allowed(self, principal: Principal, repository: str) -> frozenset[str]:
        """The actions ``principal`` may take on ``repository``."""
        if principal.scopes is not None:
            # A bearer token grants what it says (it was checked when issued).
            return principal.scopes.get(repository, frozenset())
        granted: frozenset[str] = frozenset()
        unauthenticated = principal.name == ANONYMOUS
        if unauthenticated and self.anonymous_read:
            granted = frozenset({'pull'})
        if not self.configured:
            return frozenset(ACTIONS) if not unauthenticated else granted
        for rule in self.rules:
            if fnmatch.fnmatchcase(repository, rule.repository) and self._matches(
                    principal, rule.principals):
                return granted | rule.actions
        return granted

    def may_list_catalog(self, principal: Principal) -> bool:
        if principal.scopes is not None:
            return principal.catalog
        if not self.configured:
            return principal.name != ANONYMOUS or self.anonymous_read
        return self._matches(principal, self.catalog)


class AccessFile(WatchedFile):
    """The rules file (``--access``), re-read on change at every login and token
    refresh, so a refresh grants what the rules say now."""

    kind = 'rules'

    def __init__(self, path: Path, *, anonymous_read: bool = False):
        self.anonymous_read = anonymous_read
        self.current = Access(anonymous_read=anonymous_read)
        super().__init__(path)

    def _parse(self) -> Access:
        return Access.load(self.path, anonymous_read=self.anonymous_read)

    def _use(self, access: Access) -> None:
        self.current = access


class TokenIssuer:
    """HS256 JWTs: the registry both issues and checks them, so one shared secret is
    all every worker and replica needs: the key in the metadata store
    (:func:`stored_signing_key`), read once per process, off the event loop."""

    def __init__(self, key: bytes | Callable[[], Awaitable[bytes]], service: str,
                 ttl: int):
        if isinstance(key, bytes) and len(key) < KEY_BYTES:
            raise AuthError(f'token signing key is {len(key)} bytes, needs {KEY_BYTES}')
        self._key: bytes | None = key if isinstance(key, bytes) else None
        self._load = None if isinstance(key, bytes) else key
        self._loading: asyncio.Lock | None = None
        self.service = service
        self.ttl = ttl
        import jwt  # noqa: F401  at startup, so no request pays for the import

    @classmethod
    def from_store(cls, store: MetadataStore, root: Path, service: str, ttl: int
                   ) -> TokenIssuer:
        """An issuer whose key comes from ``store`` at its first use."""
        return cls(lambda: stored_signing_key(store, root), service, ttl)

    async def key(self) -> bytes:
        """The signing key (loaded once; StoreUnavailable, a 503, while it cannot
        be: no token is issued or accepted without it)."""
        if self._key is None:
            if self._loading is None:
                self._loading = asyncio.Lock()
            async with self._loading:
                if self._key is None:
                    assert self._load is not None
                    try:
                        self._key = await self._load()
                    except AuthError as ex:
                        raise StoreUnavailable('token signing key', str(ex)) from None
        return self._key

    async def issue(self, subject: str, access: list[dict[str, Any]], *,
                    refresh: bool = False) -> tuple[str, int, str]:
        key = await self.key()
        now = int(time.time())
        ttl = self.ttl * 288 if refresh else self.ttl  # refresh tokens: a day by default
        claims = {
            'iss': 'oci-ref', 'sub': subject, 'aud': self.service, 'iat': now,
            'nbf': now - 1, 'exp': now + ttl, 'jti': secrets.token_hex(8),
            'access': access, 'typ': 'refresh' if refresh else 'access',
        }
        issued_at = datetime.fromtimestamp(now, UTC).isoformat().replace('+00:00', 'Z')
        import jwt

        return jwt.encode(claims, key, algorithm='HS256'), ttl, issued_at

    async def check(self, token: str, *, refresh: bool = False) -> dict[str, Any]:
        key = await self.key()
        import jwt

        try:
            claims = jwt.decode(token, key, algorithms=['HS256'],
                                audience=self.service, issuer='oci-ref')
        except jwt.PyJWTError as ex:
            raise AuthError(f'invalid token: {ex}') from None
        if claims.get('typ') != ('refresh' if refresh else 'access'):
            raise AuthError('wrong kind of token')
        return claims


async def stored_signing_key(store: MetadataStore, root: Path) -> bytes:
    """The token signing key of this registry: one for every worker and replica,
    kept in the metadata store (``signing_keys``, name ``token``).

    Made at its first use (``oci-ref serve`` does that before it starts workers):
    the key of ``<root>/.token-key`` where a registry made before the key moved
    into the store has one (its tokens stay valid; the file is then renamed
    ``.token-key.imported`` and never read again), else new random bytes.
    Replicas starting together agree on one: the store keeps the first key stored
    and every caller reads that one. A key shorter than KEY_BYTES is refused, never
    used. The file is read in a thread, never on the event loop.
    """
    key = await store.signing_key(TOKEN_KEY, None)
    if key is None:
        path = root / KEY_FILE
        legacy = await asyncio.to_thread(_legacy_key, path)
        key = await store.signing_key(TOKEN_KEY, legacy or _new_key())
        if key is None:  # a key was stored: only a broken store reads none back
            raise StoreUnavailable(store.name, 'the token signing key it stored is gone')
        if legacy is not None and key == legacy:
            await asyncio.to_thread(_retire, path)
            log.info('the token signing key of %s is now kept in the %s store',
                     path, store.name)
    if len(key) < KEY_BYTES:
        raise AuthError(
            f'the token signing key in the {store.name} store is {len(key)} bytes, at '
            f'least {KEY_BYTES} are needed: delete it (DELETE FROM signing_keys WHERE '
            f"name = '{TOKEN_KEY}') and a new key is made at the next start (tokens "
            f'signed with the old one stop working)')
    return key


def _legacy_key(path: Path) -> bytes | None:
    """``<root>/.token-key`` (a registry from before the key moved into the store),
    refused when short (a crash in the old lazy creation could leave it so)."""
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as ex:
        raise AuthError(f'cannot read the token signing key {path}: {ex.strerror}'
                        ) from None
    if len(key) < KEY_BYTES:
        raise AuthError(
            f'the token signing key {path} is {len(key)} bytes, at least {KEY_BYTES} '
            f'are needed: remove the file and a new key is made at the next start '
            f'(tokens signed with the old one stop working)')
    return key


def _retire(path: Path) -> None:
    # Kept (a downgrade can put it back), but never imported again: a key deleted
    # from the store to rotate it must not come back from this file.
    with contextlib.suppress(FileNotFoundError):
        os.replace(path, path.with_name(KEY_FILE + '.imported'))


def _new_key() -> bytes:
    import jwt
    from jwt.algorithms import HMACAlgorithm

    while True:
        key = secrets.token_bytes(KEY_BYTES)
        try:  # random bytes that happen to parse as DER or JSON: PyJWT refuses those
            HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(key)
            return key
        except jwt.InvalidKeyError:
            continue


def parse_scope(scope: str) -> tuple[str, str, frozenset[str]] | None:
    """``repository:<name>:<a,b>`` or ``registry:catalog:*`` -> (type, name, actions).
    Names may hold ':' (a port in a mirrored name), so split from both ends."""
    kind, sep, rest = scope.partition(':')
    name, sep2, actions = rest.rpartition(':')
    if not sep or not sep2 or not name:
        return None
    return kind, name, frozenset(a for a in actions.split(',') if a)


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header or header[:6].lower() != 'basic ':
        return None
    try:
        user, sep, password = base64.b64decode(header[6:].strip(), validate=True
                                               ).decode('utf-8').partition(':')
    except (ValueError, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def bearer_token(header: str | None) -> str | None:
    if header and header[:7].lower() == 'bearer ':
        return header[7:].strip()
    return None

