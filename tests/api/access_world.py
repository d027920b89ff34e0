"""The access-control world the API auth tests share: users, rules, the
hand-written oracle of who may do what, and helpers to act as a caller."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jwt

from oci_ref.app import create_app
from oci_ref.config import Config
from tests.interop.auth import basic_header, parse_challenge
from tests.support import (
    InProcess,
    Resp,
    digest,
    push_image,
)

PASSWORDS = {
    'admin': 'admin-Secr3t!',
    'dev': 'dev pass: with spaces & colon',
    'reader': 'reader-\u00fcml\u00e4ut-pw',
    'outsider': 'outsider-pw-0123456789',
}
WRONG = ('dev', 'not-the-dev-password')
CALLERS = ('anonymous', 'admin', 'dev', 'reader', 'outsider', 'wrong-password')
REPOS = ('team/app', 'team/sub/app', 'teamx/app', 'other/app', 'public/lib', 'team')
ACTIONS = ('pull', 'push', 'delete', 'catalog')

ACCESS_TOML = '''
[groups]
admins = ["admin"]
devs = ["dev"]
readers = ["reader"]

[[rule]]                        # 1: admins, everywhere
repository = "*"
principals = ["@admins"]
actions = ["pull", "push", "delete"]

[[rule]]                        # 2: first match wins: devs only pull under team/sub/
repository = "team/sub/*"
principals = ["@devs", "outsider"]
actions = ["pull"]

[[rule]]                        # 3: "team/*" spans "/" but matches neither
repository = "team/*"           #    "teamx/app" nor "team"
principals = ["@devs"]
actions = ["pull", "push", "delete"]

[[rule]]                        # 4
repository = "team/*"
principals = ["@readers"]
actions = ["pull"]

[[rule]]                        # 5: an exact name
repository = "other/app"
principals = ["outsider"]
actions = ["pull", "push"]

[[rule]]                        # 6: delete without pull
repository = "other/*"
principals = ["reader"]
actions = ["delete"]

[[rule]]                        # 7: anonymous, by name
repository = "public/*"
principals = ["anonymous"]
actions = ["pull"]

[[rule]]                        # 8: "*" is any authenticated user
repository = "public/*"
principals = ["*"]
actions = ["pull"]

[catalog]
principals = ["@admins", "@devs", "reader"]
'''

_ = frozenset
ALL = _({'pull', 'push', 'delete'})
PULL = _({'pull'})
PULL_PUSH = _({'pull', 'push'})
NOTHING: frozenset[str] = _()
# What ACCESS_TOML grants, worked out by hand: the first rule matching both the
# repository and the caller decides; "*" in a glob also spans "/"; the principal "*"
# is any authenticated user but never the anonymous caller.
RULE_GRANTS: dict[str, dict[str, frozenset[str]]] = {
    'team/app': {'admin': ALL, 'dev': ALL, 'reader': PULL, 'outsider': NOTHING,
                 'anonymous': NOTHING},
    'team/sub/app': {'admin': ALL, 'dev': PULL, 'reader': PULL, 'outsider': PULL,
                     'anonymous': NOTHING},
    'teamx/app': {'admin': ALL, 'dev': NOTHING, 'reader': NOTHING, 'outsider': NOTHING,
                  'anonymous': NOTHING},
    'other/app': {'admin': ALL, 'dev': NOTHING, 'reader': _({'delete'}),
                  'outsider': PULL_PUSH, 'anonymous': NOTHING},
    'public/lib': {'admin': ALL, 'dev': PULL, 'reader': PULL, 'outsider': PULL,
                   'anonymous': PULL},
    'team': {'admin': ALL, 'dev': NOTHING, 'reader': NOTHING, 'outsider': NOTHING,
             'anonymous': NOTHING},
}
CATALOG_USERS = {'admin', 'dev', 'reader'}


@dataclass(frozen=True)
class Mode:
    name: str
    auth: str  # none, basic, token
    rules: bool = True  # with ACCESS_TOML
    anonymous_read: bool = False


MODES = (
    Mode('open', 'none', rules=False),
    Mode('basic', 'basic'),
    Mode('basic+anonymous_read', 'basic', anonymous_read=True),
    Mode('token', 'token'),
    Mode('token+anonymous_read', 'token', anonymous_read=True),
    Mode('basic, no access file', 'basic', rules=False),
    Mode('token+anonymous_read, no access file', 'token', rules=False,
         anonymous_read=True),
)


# ------------------------------------------------------------------ oracle ----
def granted(mode: Mode, caller: str, repo: str) -> frozenset[str]:
    """The actions ``caller`` may take on ``repo`` in ``mode``."""
    if mode.auth == 'none':
        return ALL  # open: credentials, even wrong ones, are not looked at
    if caller == 'wrong-password':
        return NOTHING
    if not mode.rules:
        grants = ALL if caller != 'anonymous' else NOTHING
    else:
        grants = RULE_GRANTS[repo][caller]
    if caller == 'anonymous' and mode.anonymous_read:
        grants |= PULL
    return grants


def may_list_catalog(mode: Mode, caller: str) -> bool:
    if mode.auth == 'none':
        return True
    if caller == 'wrong-password':
        return False
    if not mode.rules:
        return caller != 'anonymous' or mode.anonymous_read
    return caller in CATALOG_USERS


def expected(mode: Mode, caller: str, repo: str, action: str) -> bool:
    if action == 'catalog':
        return may_list_catalog(mode, caller) and 'pull' in granted(mode, caller, repo)
    return action in granted(mode, caller, repo)


NEEDS = {'pull': ('pull',), 'push': ('pull', 'push'), 'delete': ('delete',)}


def scope_for(repo: str, action: str) -> str:
    if action == 'catalog':
        return 'registry:catalog:*'
    return f'repository:{repo}:{",".join(NEEDS[action])}'





@dataclass
class World:
    """One storage root seen through two apps: ``open`` (no auth: seeds and checks
    the effects) and ``app`` (the mode under test)."""

    mode: Mode
    root: Path
    open: InProcess
    app: InProcess
    seeded: dict[str, tuple[str, str]] = field(default_factory=dict)  # repo -> (m, blob)
    counter: Iterator[int] = field(default_factory=lambda: iter(range(10**9)))


def make_world(tmp: Path, mode: Mode, htpasswd: Path, access_file: Path,
               **settings: Any) -> World:
    root = tmp / 'data'
    opened = InProcess(create_app(Config(root=root)))
    config = Config(
        root=root, auth=mode.auth,
        htpasswd=htpasswd if mode.auth != 'none' else None,
        access=access_file if mode.rules and mode.auth != 'none' else None,
        anonymous_read=mode.anonymous_read,
        **{'login_failures': 1_000_000, **settings},
    ).validated()
    world = World(mode, root, opened, InProcess(create_app(config)))
    for repo in REPOS:
        manifest, _ = push_image(opened, repo, 'v1', seed=f'seed {repo}')
        world.seeded[repo] = (manifest, digest(f'layer seed {repo}'.encode()))
    return world


# ------------------------------------------------------------------ calling ----
Headers = dict[str, str]


def credentials(caller: str) -> tuple[str, str] | None:
    if caller == 'anonymous':
        return None
    if caller == 'wrong-password':
        return WRONG
    return caller, PASSWORDS[caller]


def token_url(scopes: list[str], **extra: str) -> str:
    query = [('service', 'oci-ref'), *(('scope', s) for s in scopes), *extra.items()]
    return '/token?' + urlencode(query)


def get_token(c: InProcess, caller: str, scopes: list[str]) -> tuple[Resp, str | None]:
    """GET /token as docker and containerd do: Basic credentials when the caller has
    any, the scopes the operation needs."""
    creds = credentials(caller)
    headers = {'Authorization': basic_header(*creds)} if creds else {}
    r = c.get(token_url(scopes), headers=headers)
    return r, (r.json()['token'] if r.status_code == 200 else None)


def claims_of(token: str) -> dict[str, Any]:
    """The JWT's claims, read without the key (as a test can, not as the server)."""
    return dict(jwt.decode(token, options={'verify_signature': False}))


@dataclass
class Cell:
    mode: str
    caller: str
    repo: str
    action: str
    allowed: bool
    verdict: str = ''  # ok | unauthorized success | wrongful denial | wrong status | error
    evidence: list[str] = field(default_factory=list)


def describe(step: str, r: Resp) -> str:
    return (f'{step} -> {r.status_code} {r.headers.get("www-authenticate", "")!s} '
            f'{r.content[:160]!r}')


def denial_problem(world: World, caller: str, scope: str, r: Resp, method: str
                   ) -> str | None:
    """None when ``r`` is the right refusal for ``caller``, else what is wrong."""
    mode = world.mode
    unauthenticated = caller in ('anonymous', 'wrong-password')
    if mode.auth == 'basic' and not unauthenticated:
        if r.status_code != 403:
            return 'expected 403 DENIED'
        code = 'DENIED'
    else:
        if r.status_code != 401:
            return 'expected 401'
        challenge = r.headers.get('www-authenticate')
        if not challenge:
            return '401 without WWW-Authenticate'
        scheme, params = parse_challenge(challenge)
        if mode.auth == 'basic':
            if scheme != 'basic' or 'realm' not in params:
                return f'expected a Basic challenge, got {challenge!r}'
        else:
            if scheme != 'bearer':
                return f'expected a Bearer challenge, got {challenge!r}'
            if not re.fullmatch(r'https?://[^/]+/token', params.get('realm', '')):
                return f'realm is not an absolute URL of /token: {challenge!r}'
            if params.get('service') != 'oci-ref':
                return f'wrong service in {challenge!r}'
            if params.get('scope') != scope:
                return f'challenge scope {params.get("scope")!r}, needed {scope!r}'
            if not unauthenticated and params.get('error') != 'insufficient_scope':
                return f'expected error="insufficient_scope" in {challenge!r}'
        code = 'UNAUTHORIZED'
    if method == 'HEAD':
        return None
    try:
        body = r.json()
    except ValueError:
        return 'error body is not JSON'
    if not r.headers.get('content-type', '').startswith('application/json'):
        return 'error body is not application/json'
    if body.get('errors', [{}])[0].get('code') != code:
        return f'expected error code {code}'
    return None


# ----------------------------------------------------------------- helpers ----
BASIC = Mode('basic', 'basic')
TOKEN = Mode('token', 'token')


def auth_for(world: World, caller: str, scopes: list[str]) -> Headers:
    """Headers to act as ``caller``: Basic credentials, or a token for ``scopes``."""
    creds = credentials(caller)
    if world.mode.auth == 'basic':
        return {'Authorization': basic_header(*creds)} if creds else {}
    r, token = get_token(world.app, caller, scopes)
    assert token is not None, r.content
    return {'Authorization': f'Bearer {token}'}


def assert_unauthorized(r: Resp, scheme: str) -> dict[str, str]:
    assert r.status_code == 401, (r.status_code, r.content)
    assert r.json()['errors'][0]['code'] == 'UNAUTHORIZED'
    got, params = parse_challenge(r.headers['www-authenticate'])
    assert got == scheme, r.headers['www-authenticate']
    return params
