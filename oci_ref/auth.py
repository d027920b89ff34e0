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
import os
import secrets
import time
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bcrypt
import jwt

ACTIONS = ('pull', 'push', 'delete')
ANONYMOUS = 'anonymous'
_DUMMY_HASHES: dict[int, str] = {}


def _dummy_hash(cost: int) -> str:
    """bcrypt of a random password at ``cost``: checked when the user is unknown, so
    a wrong user costs as much time as a wrong password (no enumeration by timing)."""
    if cost not in _DUMMY_HASHES:
        _DUMMY_HASHES[cost] = bcrypt.hashpw(secrets.token_bytes(16),
                                            bcrypt.gensalt(rounds=cost)).decode()
    return _DUMMY_HASHES[cost]


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


class Htpasswd:
    """``user:hash`` lines as ``htpasswd -B`` writes them (bcrypt only)."""

    def __init__(self, path: Path):
        self.path = path
        self._users: dict[str, str] = {}
        self._mtime = -1.0
        self._cost = 12
        self._load()

    def _load(self) -> None:
        mtime = self.path.stat().st_mtime
        if mtime == self._mtime:
            return
        users = {}
        for number, line in enumerate(self.path.read_text().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith('#'):
                continue
            user, sep, hashed = line.partition(':')
            if not sep or not hashed.startswith(('$2y$', '$2b$', '$2a$')):
                raise AuthError(f'{self.path}:{number}: not a bcrypt entry (htpasswd -B)')
            users[user] = hashed
        self._users, self._mtime = users, mtime
        # The dummy check runs at the cost the file's entries use (htpasswd -B
        # writes cost 5 by default; a cost-12 dummy would give unknown users away).
        costs = [int(h.split('$')[2]) for h in users.values() if h.count('$') >= 3
                 and h.split('$')[2].isdigit()]
        self._cost = max(set(costs), key=costs.count) if costs else 12

    def verify(self, user: str, password: str) -> bool:
        with contextlib.suppress(OSError):
            self._load()  # picks up edits without a restart
        hashed = self._users.get(user)
        # bcrypt runs either way (against a dummy hash for unknown users), so a
        # wrong user name takes as long as a wrong password.
        ok = bcrypt.checkpw(password.encode(),
                            (hashed or _dummy_hash(self._cost)).encode())
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


class TokenIssuer:
    """HS256 JWTs: the registry both issues and checks them, so a shared secret
    (``<root>/.token-key``, made once, mode 0600) is all every worker needs."""

    def __init__(self, key: bytes, service: str, ttl: int):
        self.key = key
        self.service = service
        self.ttl = ttl

    @classmethod
    def for_root(cls, root: Path, service: str, ttl: int) -> TokenIssuer:
        path = root / '.token-key'
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return cls(path.read_bytes(), service, ttl)
        with os.fdopen(fd, 'wb') as f:
            f.write(secrets.token_bytes(32))
        return cls(path.read_bytes(), service, ttl)

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
        return jwt.encode(claims, self.key, algorithm='HS256'), ttl, issued_at

    def check(self, token: str, *, refresh: bool = False) -> dict[str, Any]:
        try:
            claims = jwt.decode(token, self.key, algorithms=['HS256'],
                                audience=self.service, issuer='oci-ref')
        except jwt.PyJWTError as ex:
            raise AuthError(f'invalid token: {ex}') from None
        if claims.get('typ') != ('refresh' if refresh else 'access'):
            raise AuthError('wrong kind of token')
        return claims


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

