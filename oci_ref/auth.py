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
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# bcrypt and jwt (with cryptography, a tenth of the start) are imported where they are
# used: with auth off, or without htpasswd, a server never needs them.

log = logging.getLogger('oci_ref.auth')

ACTIONS = ('pull', 'push', 'delete')
ANONYMOUS = 'anonymous'
# bcrypt reads the first 72 bytes of a password; bcrypt >= 5 raises on longer ones.
MAX_PASSWORD_BYTES = 72
# An htpasswd -B entry: $2y$ (or $2a$/$2b$), a two-digit cost, 22 salt + 31 hash chars.
_ENTRY = re.compile(r'\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}')
KEY_FILE = '.token-key'
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
    """HS256 JWTs: the registry both issues and checks them, so a shared secret
    (``<root>/.token-key``, made once, mode 0600) is all every worker needs."""

    def __init__(self, key: bytes, service: str, ttl: int):
        if len(key) < KEY_BYTES:
            raise AuthError(f'token signing key is {len(key)} bytes, needs {KEY_BYTES}')
        self.key = key
        self.service = service
        self.ttl = ttl
        import jwt  # noqa: F401  at startup, so no request pays for the import

    @classmethod
    def for_root(cls, root: Path, service: str, ttl: int) -> TokenIssuer:
        return cls(signing_key(root), service, ttl)

    def issue(self, subject: str, access: list[dict[str, Any]], *, refresh: bool = False
              ) -> tuple[str, int, str]:
        now = int(time.time())
        ttl = self.ttl * 288 if refresh else self.ttl  # refresh tokens: a day by default
        claims = {
            'iss': 'oci-ref', 'sub': subject, 'aud': self.service, 'iat': now,
            'nbf': now - 1, 'exp': now + ttl, 'jti': secrets.token_hex(8),
            'access': access, 'typ': 'refresh' if refresh else 'access',
        }
        issued_at = datetime.fromtimestamp(now, UTC).isoformat().replace('+00:00', 'Z')
        import jwt

        return jwt.encode(claims, self.key, algorithm='HS256'), ttl, issued_at

    def check(self, token: str, *, refresh: bool = False) -> dict[str, Any]:
        import jwt

        try:
            claims = jwt.decode(token, self.key, algorithms=['HS256'],
                                audience=self.service, issuer='oci-ref')
        except jwt.PyJWTError as ex:
            raise AuthError(f'invalid token: {ex}') from None
        if claims.get('typ') != ('refresh' if refresh else 'access'):
            raise AuthError('wrong kind of token')
        return claims


def signing_key(root: Path) -> bytes:
    """The token signing key of ``root``, made if there is none yet.

    Made whole or not at all: written to a temporary file, fsynced, then linked into
    place (a link, unlike a rename, never replaces a key another process made in
    the meantime), so no worker and no crash can leave an empty or short key. A key
    shorter than KEY_BYTES is refused, never used. ``oci-ref serve`` calls this
    before it starts workers.
    """
    path = root / KEY_FILE
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = _make_key(path)
    except OSError as ex:
        raise AuthError(f'cannot read the token signing key {path}: {ex.strerror}'
                        ) from None
    if len(key) < KEY_BYTES:
        raise AuthError(
            f'the token signing key {path} is {len(key)} bytes, at least {KEY_BYTES} '
            f'are needed: remove the file and a new key is made at the next start '
            f'(tokens signed with the old one stop working)')
    return key


def _make_key(path: Path) -> bytes:
    import jwt
    from jwt.algorithms import HMACAlgorithm

    while True:
        key = secrets.token_bytes(KEY_BYTES)
        try:  # random bytes that happen to parse as DER or JSON: PyJWT refuses those
            HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(key)
            break
        except jwt.InvalidKeyError:
            continue
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'{KEY_FILE}.{uuid.uuid4().hex}.tmp')
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        # Another process made one first: everyone uses that one.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path.read_bytes()


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

