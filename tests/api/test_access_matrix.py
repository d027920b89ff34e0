"""Access control, cell by cell, in-process.

The matrix: every mode (open, basic, basic + anonymous_read, token, token +
anonymous_read, and basic / token without an access file) x every caller
(anonymous, admin, dev, reader, outsider, a wrong password) x repositories chosen
for glob edge cases x every action (pull, push, delete, catalog). Each cell's
verdict comes from the hand-written oracle below (never from ``oci_ref.auth``); the
real operation then runs over HTTP and the cell is counted: an unauthorized success
or a wrongful denial fails the test, and so does a denial of the wrong kind (basic:
401 UNAUTHORIZED with a challenge for missing or bad credentials, 403 DENIED for a
known user without the right; token: 401, with ``error="insufficient_scope"`` for
a known user).

Also here: the catalog lists exactly the readable repositories with exact ``n``
pages; mounts from unreadable repositories degrade to 202; ``/v2/``; the token
endpoint (GET, POST, refresh, bad tokens); the failed-login limit; bcrypt for
unknown users.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jwt
import pytest

from oci_ref.app import create_app
from oci_ref.config import Config
from tests.interop.auth import basic_header, parse_challenge, write_htpasswd
from tests.support import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    InProcess,
    Resp,
    digest,
    push_blob,
    push_image,
    stored_token_key,
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


# ------------------------------------------------------------- the world ----
@pytest.fixture(scope='module')
def htpasswd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bcrypt entries as `htpasswd -Bbn` writes them ($2y$, cost 5), made with the
    bcrypt package; test_a_file_written_by_htpasswd_B_logs_in uses the binary."""
    return write_htpasswd(tmp_path_factory.mktemp('users') / 'htpasswd', PASSWORDS)


@pytest.fixture(scope='module')
def access_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp('access') / 'access.toml'
    path.write_text(ACCESS_TOML)
    return path


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


class Runner:
    """Runs one cell's operation over HTTP as ``caller`` and judges it."""

    def __init__(self, world: World):
        self.world = world
        self.c = world.app

    def auth_headers(self, caller: str, scope: str, cell: Cell
                     ) -> tuple[Headers, list[tuple[str, Resp]]]:
        """Headers for the operation; in token mode, the token fetch's response."""
        mode = self.world.mode
        creds = credentials(caller)
        if mode.auth in ('none', 'basic'):
            return ({'Authorization': basic_header(*creds)} if creds else {}), []
        r, token = get_token(self.c, caller, [scope])
        if token is None:
            return {}, [('GET /token', r)]
        # The token holds exactly the intersection of what was asked and what the
        # oracle grants: more is an unauthorized grant, less a wrongful one.
        kind, name, actions = scope.split(':')
        asked = set(actions.split(','))
        if kind == 'registry':
            want = ['*'] if may_list_catalog(mode, caller) else []
        else:
            want = sorted(asked & granted(mode, caller, name))
        got = claims_of(token).get('access')
        if got != [{'type': kind, 'name': name, 'actions': want}]:
            cell.evidence.append(f'token grants {got}, oracle {want}')
            extra = {a for g in got or [] for a in g.get('actions', [])} - set(want)
            cell.verdict = 'unauthorized success' if extra else 'wrongful denial'
        return {'Authorization': f'Bearer {token}'}, []

    def judge(self, cell: Cell, scope: str, steps: list[tuple[str, Resp]],
              effect_ok: bool = True) -> None:
        ok = all(200 <= r.status_code < 300 for _, r in steps)
        cell.evidence += [describe(s, r) for s, r in steps]
        if cell.verdict:  # the token already decided it
            return
        if cell.allowed:
            if ok and effect_ok:
                cell.verdict = 'ok'
            elif any(r.status_code in (401, 403) for _, r in steps):
                cell.verdict = 'wrongful denial'
            else:
                cell.verdict = 'error'
            return
        if any(200 <= r.status_code < 300 for _, r in steps) or not effect_ok:
            cell.verdict = 'unauthorized success'
            return
        problems = []
        for step, r in steps:
            if step == 'GET /token':
                if r.status_code != 401 or r.json()['errors'][0]['code'] != 'UNAUTHORIZED':
                    problems.append(f'{step}: expected 401 UNAUTHORIZED')
                continue
            problem = denial_problem(self.world, cell.caller, scope, r, step.split()[0])
            if problem:
                problems.append(f'{step}: {problem}')
        cell.evidence += problems
        cell.verdict = 'wrong status' if problems else 'ok'

    # -- the operations ------------------------------------------------------------
    def pull(self, cell: Cell) -> None:
        scope = scope_for(cell.repo, 'pull')
        headers, steps = self.auth_headers(cell.caller, scope, cell)
        if not steps:
            manifest, blob = self.world.seeded[cell.repo]
            accept = {**headers, 'Accept': OCI_MANIFEST}
            base = f'/v2/{cell.repo}'
            steps = [
                ('GET manifest', self.c.get(f'{base}/manifests/v1', headers=accept)),
                ('HEAD manifest', self.c.head(f'{base}/manifests/{manifest}',
                                              headers=accept)),
                ('GET blob', self.c.get(f'{base}/blobs/{blob}', headers=headers)),
                ('GET tags', self.c.get(f'{base}/tags/list', headers=headers)),
            ]
            if cell.allowed and all(r.status_code == 200 for _, r in steps):
                got = steps[2][1].content
                if got != f'layer seed {cell.repo}'.encode():
                    cell.evidence.append(f'wrong blob content {got[:50]!r}')
                    cell.verdict = 'error'
        self.judge(cell, scope, steps)

    def push(self, cell: Cell) -> None:
        scope = scope_for(cell.repo, 'push')
        headers, steps = self.auth_headers(cell.caller, scope, cell)
        n = next(self.world.counter)
        tag = f'push-{n}'
        config = json.dumps({'architecture': 'amd64', 'os': 'linux', 'n': n}).encode()
        layer = f'pushed layer {n} {cell}'.encode()
        manifest = json.dumps({
            'schemaVersion': 2, 'mediaType': OCI_MANIFEST,
            'config': {'mediaType': OCI_CONFIG, 'digest': digest(config),
                       'size': len(config)},
            'layers': [{'mediaType': OCI_LAYER, 'digest': digest(layer),
                        'size': len(layer)}],
        }).encode()
        base = f'/v2/{cell.repo}'
        put_manifest = {**headers, 'Content-Type': OCI_MANIFEST}
        if steps:
            pass  # no token: nothing to send it with
        elif cell.allowed:
            for blob in (config, layer):
                r = self.c.post(f'{base}/blobs/uploads/', headers=headers)
                steps.append(('POST upload', r))
                if r.status_code != 202:
                    break
                r = self.c.put(f'{r.headers["location"]}?digest={digest(blob)}',
                               content=blob, headers={
                                   **headers, 'Content-Type': 'application/octet-stream'})
                steps.append(('PUT blob', r))
            if all(r.status_code < 300 for _, r in steps):
                steps.append(('PUT manifest', self.c.put(f'{base}/manifests/{tag}',
                                                         content=manifest,
                                                         headers=put_manifest)))
        else:
            # Every write route refuses: a new session, another's session (made
            # through the open app), and a manifest whose blobs are all present.
            for blob in (config, layer):
                push_blob(self.world.open, cell.repo, blob)
            r = self.world.open.post(f'{base}/blobs/uploads/')
            assert r.status_code == 202
            session = r.headers['location']
            octet = {**headers, 'Content-Type': 'application/octet-stream'}
            steps = [
                ('POST upload', self.c.post(f'{base}/blobs/uploads/', headers=headers)),
                ('POST monolithic', self.c.post(
                    f'{base}/blobs/uploads/?digest={digest(b"mono")}', content=b'mono',
                    headers=octet)),
                ('PATCH session', self.c.patch(session, content=b'x', headers=octet)),
                ('PUT session', self.c.put(f'{session}?digest={digest(b"x")}',
                                           content=b'x', headers=octet)),
                ('PUT manifest', self.c.put(f'{base}/manifests/{tag}', content=manifest,
                                            headers=put_manifest)),
            ]
        # The effect, seen through the open app: the tag exists iff allowed.
        stored = self.world.open.get(f'{base}/manifests/{tag}',
                                     headers={'Accept': OCI_MANIFEST})
        exists = stored.status_code == 200 and stored.content == manifest
        self.judge(cell, scope, steps, effect_ok=exists if cell.allowed else not exists)

    def delete(self, cell: Cell) -> None:
        scope = scope_for(cell.repo, 'delete')
        n = next(self.world.counter)
        target, _ = push_image(self.world.open, cell.repo, f'del-{n}', seed=f'del {n}')
        headers, steps = self.auth_headers(cell.caller, scope, cell)
        base = f'/v2/{cell.repo}'
        if not steps:
            if not cell.allowed:
                steps.append(('DELETE tag', self.c.delete(f'{base}/manifests/del-{n}',
                                                          headers=headers)))
                blob = digest(f'layer del {n}'.encode())
                steps.append(('DELETE blob', self.c.delete(f'{base}/blobs/{blob}',
                                                           headers=headers)))
            steps.append(('DELETE manifest', self.c.delete(f'{base}/manifests/{target}',
                                                           headers=headers)))
        status = self.world.open.get(f'{base}/manifests/{target}',
                                     headers={'Accept': OCI_MANIFEST}).status_code
        self.judge(cell, scope, steps,
                   effect_ok=(status == 404) if cell.allowed else (status == 200))

    def catalog(self, caller: str) -> list[Cell]:
        """One listing; a cell per repository: listed iff the caller may list the
        catalog and may pull the repository."""
        mode = self.world.mode
        cells = [Cell(mode.name, caller, repo, 'catalog',
                      expected(mode, caller, repo, 'catalog')) for repo in REPOS]
        scope = scope_for('', 'catalog')
        probe = Cell(mode.name, caller, '*', 'catalog', may_list_catalog(mode, caller))
        headers, steps = self.auth_headers(caller, scope, probe)
        if not steps:
            steps = [('GET catalog', self.c.get('/v2/_catalog', headers=headers))]
        r = steps[-1][1]
        listed = set(r.json()['repositories']) if r.status_code == 200 else None
        for cell in cells:
            cell.evidence = list(probe.evidence) + [describe(s, x) for s, x in steps]
            if probe.verdict and probe.verdict != 'ok':
                cell.verdict = probe.verdict
            elif listed is not None:
                shown = cell.repo in listed
                if shown == cell.allowed:
                    cell.verdict = 'ok'
                else:
                    cell.verdict = 'unauthorized success' if shown else 'wrongful denial'
            elif cell.allowed:
                cell.verdict = ('wrongful denial' if r.status_code in (401, 403)
                                else 'error')
            else:
                problem = None
                for step, x in steps:
                    if step == 'GET /token':
                        if x.status_code != 401:
                            problem = f'{step}: expected 401'
                    else:
                        problem = denial_problem(self.world, caller, scope, x, 'GET')
                cell.verdict = 'wrong status' if problem else 'ok'
                if problem:
                    cell.evidence.append(problem)
        if listed is not None and listed - set(REPOS):
            cells[0].verdict = 'error'
            cells[0].evidence.append(f'unknown repositories listed: {listed}')
        return cells


# ------------------------------------------------------------------ matrix ----
TALLY: dict[str, Counter[str]] = {}


def run_matrix(world: World) -> list[Cell]:
    runner = Runner(world)
    cells: list[Cell] = []
    for caller in CALLERS:
        for repo in REPOS:
            for action in ('pull', 'push', 'delete'):
                cell = Cell(world.mode.name, caller, repo, action,
                            expected(world.mode, caller, repo, action))
                getattr(runner, action)(cell)
                cells.append(cell)
        cells += runner.catalog(caller)
    return cells


def check_challenges(world: World) -> list[str]:
    """With no credentials at all, a denied operation's 401 names the scope a
    client must ask for (the first request of every client)."""
    problems = []
    if world.mode.auth != 'token':
        return problems
    for repo in REPOS:
        base = f'/v2/{repo}'
        manifest, _ = world.seeded[repo]
        for action, (method, url) in {
            'pull': ('GET', f'{base}/manifests/v1'),
            'push': ('POST', f'{base}/blobs/uploads/'),
            'delete': ('DELETE', f'{base}/manifests/{manifest}'),
            'catalog': ('GET', '/v2/_catalog'),
        }.items():
            if expected(world.mode, 'anonymous', repo, action):
                continue
            r = world.app.request(method, url)
            problem = denial_problem(world, 'anonymous', scope_for(repo, action), r,
                                     method)
            if problem:
                problems.append(f'{method} {url}: {problem}: {describe("", r)}')
    return problems


@pytest.mark.parametrize('mode', MODES, ids=[m.name for m in MODES])
def test_access_matrix(mode: Mode, tmp_path: Path, htpasswd: Path, access_file: Path
                       ) -> None:
    """Every (caller, repository, action) cell of one mode, over HTTP."""
    world = make_world(tmp_path, mode, htpasswd, access_file)
    cells = run_matrix(world)
    assert len(cells) == len(CALLERS) * len(REPOS) * len(ACTIONS)
    tally = Counter(c.verdict for c in cells)
    tally['allowed cells'] = sum(c.allowed for c in cells)
    tally['denied cells'] = sum(not c.allowed for c in cells)
    TALLY[mode.name] = tally
    print(f'\naccess matrix [{mode.name}]: {len(cells)} cells, '
          f'{tally["allowed cells"]} allowed / {tally["denied cells"]} denied; '
          f'{tally["unauthorized success"]} unauthorized successes, '
          f'{tally["wrongful denial"]} wrongful denials, '
          f'{tally["wrong status"]} wrong statuses, {tally["error"]} errors')
    bad = [c for c in cells if c.verdict != 'ok']
    order = ['unauthorized success', 'wrongful denial', 'wrong status', 'error']
    bad.sort(key=lambda c: order.index(c.verdict) if c.verdict in order else 9)
    report = '\n'.join(
        f'{c.verdict.upper()}: {c.caller} {c.action} {c.repo} '
        f'(oracle: {"allow" if c.allowed else "deny"})\n    ' + '\n    '.join(c.evidence)
        for c in bad[:40])
    assert tally['unauthorized success'] == 0, report
    assert not bad, f'{len(bad)} wrong cells in mode {mode.name}:\n{report}'
    problems = check_challenges(world)
    assert not problems, '\n'.join(problems)


def test_access_matrix_totals() -> None:
    """The whole matrix ran (when every mode was selected): its size and result."""
    if len(TALLY) != len(MODES):
        pytest.skip('not every mode of the matrix ran in this session')
    total = sum(TALLY.values(), Counter())
    cells = len(MODES) * len(CALLERS) * len(REPOS) * len(ACTIONS)
    print(f'\naccess matrix: {len(MODES)} modes x {len(CALLERS)} callers x '
          f'{len(REPOS)} repositories x {len(ACTIONS)} actions = {cells} cells; '
          f'{total["unauthorized success"]} unauthorized successes, '
          f'{total["wrongful denial"]} wrongful denials')
    assert total['ok'] == cells
    assert total['unauthorized success'] == total['wrongful denial'] == 0


def test_oracle_sanity() -> None:
    """The hand-written oracle covers every cell and is not trivially all-allow or
    all-deny in any authenticated mode."""
    for mode in MODES:
        verdicts = {expected(mode, c, r, a) for c in CALLERS for r in REPOS
                    for a in ACTIONS}
        assert verdicts == ({True} if mode.auth == 'none' else {True, False}), mode
    assert set(RULE_GRANTS) == set(REPOS)


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


# ------------------------------------------------------------------ catalog ----
@pytest.mark.parametrize('mode', [BASIC, TOKEN], ids=['basic', 'token'])
@pytest.mark.parametrize('caller', ['admin', 'dev', 'reader'])
def test_catalog_lists_exactly_the_readable_repositories_with_exact_pages(
        mode: Mode, caller: str, tmp_path: Path, htpasswd: Path, access_file: Path
        ) -> None:
    """Pages of exactly n readable names (n = 1..4), Link iff more; never an
    unreadable one, even where unreadable names sort between readable ones."""
    world = make_world(tmp_path, mode, htpasswd, access_file)
    extra = ['a/hidden', 'public/a', 'public/z', 'team/b', 'team/c/d', 'teamx/b',
             'other/b', 'zz/top']
    for name in extra:
        push_image(world.open, name, 'v1', seed=name)
    everything = sorted([*REPOS, *extra])
    readable = [r for r in everything if 'pull' in (
        RULE_GRANTS[r][caller] if r in RULE_GRANTS else
        ALL if caller == 'admin' else
        PULL if r.startswith('public/') or (r.startswith('team/') and caller in (
            'dev', 'reader')) else NOTHING)]
    assert (len(readable) >= 5 and readable != everything) or caller == 'admin'
    headers = auth_for(world, caller, ['registry:catalog:*'])
    r = world.app.get('/v2/_catalog', headers=headers)
    assert r.status_code == 200, r.content
    assert r.json()['repositories'] == readable
    for n in (1, 2, 3, 4):
        pages: list[list[str]] = []
        url: str | None = f'/v2/_catalog?n={n}'
        while url:
            r = world.app.get(url, headers=headers)
            assert r.status_code == 200, r.content
            page = r.json()['repositories']
            pages.append(page)
            link = r.headers.get('link')
            url = re.match(r'<([^>]+)>; rel="next"', link)[1] if link else None
            assert len(pages) <= len(readable) + 1
        assert [len(p) for p in pages[:-1]] == [n] * (len(pages) - 1), (n, pages)
        assert 1 <= len(pages[-1]) <= n, (n, pages)
        assert [name for page in pages for name in page] == readable, (n, pages)


# ------------------------------------------------------------------- mounts ----
@pytest.mark.parametrize('mode', [BASIC, TOKEN], ids=['basic', 'token'])
def test_mount_only_from_repositories_the_caller_may_pull(
        mode: Mode, tmp_path: Path, htpasswd: Path, access_file: Path) -> None:
    """dev pushes to team/app: a mount from teamx/app (no pull) and a from-less
    mount of a blob only teamx/app holds are 202 uploads, not 201; from public/lib
    (pull) it is 201."""
    world = make_world(tmp_path, mode, htpasswd, access_file)
    secrets = [b'only in teamx/app: 1', b'only in teamx/app: 2']
    for blob in secrets:
        push_blob(world.open, 'teamx/app', blob)
    shared = b'layer seed public/lib'
    dst = '/v2/team/app/blobs'
    cases = [('teamx/app', secrets[0], 202), (None, secrets[1], 202),
             ('public/lib', shared, 201)]
    sessions = []
    for source, blob, status in cases:
        scopes = ['repository:team/app:pull,push']
        if source:
            scopes.append(f'repository:{source}:pull')  # as clients ask for a mount
        headers = auth_for(world, 'dev', scopes)
        query = {'mount': digest(blob), **({'from': source} if source else {})}
        r = world.app.post(f'{dst}/uploads/?{urlencode(query)}', headers=headers)
        assert r.status_code == status, (source, r.status_code, r.content)
        head = world.app.head(f'{dst}/{digest(blob)}', headers=headers)
        assert head.status_code == (200 if status == 201 else 404), source
        if status == 202:
            assert '/blobs/uploads/' in r.headers['location']
            sessions.append((r.headers['location'], blob, headers))
    # The 202 sessions are normal uploads the caller can finish with the bytes.
    for location, blob, headers in sessions:
        put = world.app.put(f'{location}?digest={digest(blob)}', content=blob, headers={
            **headers, 'Content-Type': 'application/octet-stream'})
        assert put.status_code == 201, put.content
    # A caller who may not push to the target is refused before any mount.
    headers = auth_for(world, 'reader', ['repository:team/app:pull,push',
                                         'repository:public/lib:pull'])
    r = world.app.post(f'{dst}/uploads/?mount={digest(shared)}&from=public/lib',
                       headers=headers)
    assert r.status_code == (403 if mode.auth == 'basic' else 401), r.content


# --------------------------------------------------------------------- /v2/ ----
@pytest.mark.parametrize('mode', [m for m in MODES if m.auth != 'none'],
                         ids=[m.name for m in MODES if m.auth != 'none'])
def test_base_endpoint_challenges_anonymous_and_admits_any_valid_login(
        mode: Mode, tmp_path: Path, htpasswd: Path, access_file: Path) -> None:
    """/v2/: 401 with a challenge for no or bad credentials (also with
    anonymous_read); 200 for every valid user, in token mode with a token for no
    repository at all (what `docker login` sends)."""
    world = make_world(tmp_path, mode, htpasswd, access_file)
    scheme = 'basic' if mode.auth == 'basic' else 'bearer'
    for path in ('/v2/', '/v2'):
        params = assert_unauthorized(world.app.get(path), scheme)
        if scheme == 'bearer':
            assert re.fullmatch(r'https?://[^/]+/token', params['realm'])
            assert params['service'] == 'oci-ref'
            assert 'scope' not in params
    r = world.app.get('/v2/', headers={'Authorization': basic_header(*WRONG)})
    assert_unauthorized(r, scheme)
    for user, password in PASSWORDS.items():
        if mode.auth == 'basic':
            headers = {'Authorization': basic_header(user, password)}
        else:
            r = world.app.get(token_url([]), headers={
                'Authorization': basic_header(user, password)})
            assert r.status_code == 200, r.content
            assert claims_of(r.json()['token'])['access'] == []
            headers = {'Authorization': f'Bearer {r.json()["token"]}'}
        r = world.app.get('/v2/', headers=headers)
        assert r.status_code == 200, (user, r.status_code, r.content)


@pytest.mark.parametrize('anonymous_read', [False, True])
def test_base_endpoint_admits_an_anonymous_token(anonymous_read: bool, tmp_path: Path,
                                                 htpasswd: Path, access_file: Path
                                                 ) -> None:
    """A valid token is a valid token: /v2/ is 200 even for one issued to an
    anonymous caller (checklist 3.10: 200 for any valid token)."""
    mode = Mode('token', 'token', anonymous_read=anonymous_read)
    world = make_world(tmp_path, mode, htpasswd, access_file)
    r, token = get_token(world.app, 'anonymous', ['repository:public/lib:pull'])
    assert token is not None, r.content
    assert world.app.get('/v2/public/lib/tags/list', headers={
        'Authorization': f'Bearer {token}'}).status_code == 200
    r = world.app.get('/v2/', headers={'Authorization': f'Bearer {token}'})
    assert r.status_code == 200, (r.status_code, r.headers, r.content)


# ---------------------------------------------------------- token endpoint ----
RFC3339 = re.compile(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)')


def check_token_body(r: Resp) -> dict[str, Any]:
    assert r.status_code == 200, (r.status_code, r.content)
    assert r.headers['content-type'].startswith('application/json')
    body = r.json()
    assert body['token'] == body['access_token']
    assert isinstance(body['expires_in'], int) and body['expires_in'] >= 60
    assert RFC3339.fullmatch(body['issued_at']), body['issued_at']
    issued = datetime.fromisoformat(body['issued_at'].replace('Z', '+00:00'))
    assert issued.tzinfo is not None
    assert abs(issued.timestamp() - time.time()) < 120
    claims = claims_of(body['token'])
    assert claims['exp'] - claims['iat'] == body['expires_in']
    assert claims['aud'] == 'oci-ref'
    return dict(body)


def test_token_get_grants_the_intersection_of_asked_and_allowed(
        tmp_path: Path, htpasswd: Path, access_file: Path) -> None:
    world = make_world(tmp_path, TOKEN, htpasswd, access_file)
    scopes = ['repository:team/app:pull,push,delete', 'repository:team/sub/app:pull,push',
              'repository:teamx/app:pull', 'registry:catalog:*',
              'repository:other/app:pull,delete']
    r = world.app.get(token_url(scopes, account='reader', client_id='test'), headers={
        'Authorization': basic_header('reader', PASSWORDS['reader'])})
    body = check_token_body(r)
    assert 'refresh_token' not in body
    claims = claims_of(body['token'])
    assert claims['sub'] == 'reader'
    assert claims['access'] == [
        {'type': 'repository', 'name': 'team/app', 'actions': ['pull']},
        {'type': 'repository', 'name': 'team/sub/app', 'actions': ['pull']},
        {'type': 'repository', 'name': 'teamx/app', 'actions': []},
        {'type': 'registry', 'name': 'catalog', 'actions': ['*']},
        {'type': 'repository', 'name': 'other/app', 'actions': ['delete']},
    ]
    # Anonymous: a token, never an error, granting only what anonymous may do.
    body = check_token_body(world.app.get(token_url(
        [*scopes, 'repository:public/lib:pull,push'])))
    assert [g['actions'] for g in claims_of(body['token'])['access']] == [
        [], [], [], [], [], ['pull']]
    assert 'refresh_token' not in check_token_body(
        world.app.get(token_url(['repository:public/lib:pull'], offline_token='true')))
    # Bad credentials: 401, no token.
    r = world.app.get(token_url(scopes), headers={'Authorization': basic_header(*WRONG)})
    assert r.status_code == 401 and r.json()['errors'][0]['code'] == 'UNAUTHORIZED'
    assert 'token' not in r.json()


def test_token_post_password_and_refresh_token_grants(tmp_path: Path, htpasswd: Path,
                                                      access_file: Path) -> None:
    """OAuth2 POST form (distribution oauth.md), as containerd sends it."""
    world = make_world(tmp_path, TOKEN, htpasswd, access_file)
    form = {'grant_type': 'password', 'username': 'dev', 'password': PASSWORDS['dev'],
            'service': 'oci-ref', 'client_id': 'containerd-client',
            'scope': 'repository:team/app:pull,push repository:teamx/app:pull'}
    ctype = {'Content-Type': 'application/x-www-form-urlencoded'}
    body = check_token_body(world.app.post('/token', content=urlencode(form).encode(),
                                           headers=ctype))
    assert 'refresh_token' not in body
    assert claims_of(body['token'])['access'] == [
        {'type': 'repository', 'name': 'team/app', 'actions': ['pull', 'push']},
        {'type': 'repository', 'name': 'teamx/app', 'actions': []}]

    body = check_token_body(world.app.post('/token', content=urlencode(
        {**form, 'access_type': 'offline'}).encode(), headers=ctype))
    refresh = body['refresh_token']
    again = check_token_body(world.app.post('/token', content=urlencode({
        'grant_type': 'refresh_token', 'refresh_token': refresh, 'service': 'oci-ref',
        'client_id': 'x', 'scope': 'repository:team/sub/app:pull,push'}).encode(),
        headers=ctype))
    claims = claims_of(again['token'])
    assert claims['sub'] == 'dev'
    # Still the rules: dev may only pull under team/sub/.
    assert claims['access'] == [
        {'type': 'repository', 'name': 'team/sub/app', 'actions': ['pull']}]
    assert world.app.get('/v2/team/sub/app/tags/list', headers={
        'Authorization': f'Bearer {again["token"]}'}).status_code == 200

    # GET with offline_token=true and credentials also hands out a refresh token.
    body = check_token_body(world.app.get(
        token_url(['repository:team/app:pull'], offline_token='true', client_id='docker'),
        headers={'Authorization': basic_header('dev', PASSWORDS['dev'])}))
    assert body.get('refresh_token')

    def post(fields: dict[str, str]) -> Resp:
        return world.app.post('/token', content=urlencode(fields).encode(), headers=ctype)

    # A refresh token is not an access token, and the other way round.
    assert_unauthorized(world.app.get('/v2/team/app/tags/list', headers={
        'Authorization': f'Bearer {refresh}'}), 'bearer')
    r = post({'grant_type': 'refresh_token', 'refresh_token': body['token'],
              'service': 'oci-ref'})
    assert r.status_code == 401, r.content
    r = post({'grant_type': 'refresh_token', 'refresh_token': 'garbage',
              'service': 'oci-ref'})
    assert r.status_code == 401, r.content
    r = post({**form, 'password': 'wrong'})
    assert r.status_code == 401 and r.json()['errors'][0]['code'] == 'UNAUTHORIZED'
    assert 'token' not in r.json()
    r = post({**form, 'username': 'nobody'})
    assert r.status_code == 401
    r = post({'grant_type': 'client_credentials', 'service': 'oci-ref'})
    assert r.status_code == 400, r.content


def forge(claims: dict[str, Any], key: bytes, algorithm: str = 'HS256') -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def test_expired_forged_and_wrong_audience_tokens_are_401(tmp_path: Path, htpasswd: Path,
                                                          access_file: Path) -> None:
    world = make_world(tmp_path, TOKEN, htpasswd, access_file)
    _, token = get_token(world.app, 'admin', ['repository:team/app:pull,push,delete'])
    assert token is not None
    url = '/v2/team/app/tags/list'

    def status(tok: str) -> int:
        r = world.app.get(url, headers={'Authorization': f'Bearer {tok}'})
        if r.status_code == 401:
            assert_unauthorized(r, 'bearer')
        return r.status_code

    assert status(token) == 200
    key = stored_token_key(world.root)
    assert key is not None
    good = claims_of(token)
    now = int(time.time())
    assert status(forge(good, key)) == 200  # the forging itself is right
    bad = {
        'expired': forge({**good, 'iat': now - 900, 'nbf': now - 900, 'exp': now - 30},
                         key),
        'not yet valid': forge({**good, 'nbf': now + 600, 'exp': now + 900}, key),
        'wrong audience': forge({**good, 'aud': 'another-registry'}, key),
        'no audience': forge({k: v for k, v in good.items() if k != 'aud'}, key),
        'wrong issuer': forge({**good, 'iss': 'someone-else'}, key),
        'wrong key': forge(good, b'k' * 32),
        'refresh kind': forge({**good, 'typ': 'refresh'}, key),
        'alg none': (base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}')
                     .rstrip(b'=').decode() + '.' + token.split('.')[1] + '.'),
        'tampered': _tampered(token),
        'garbage': 'not.a.jwt',
    }
    assert {name: status(tok) for name, tok in bad.items()} == dict.fromkeys(bad, 401)
    # The /v2/ login check refuses them as well.
    for name, tok in bad.items():
        r = world.app.get('/v2/', headers={'Authorization': f'Bearer {tok}'})
        assert r.status_code == 401, name


def _tampered(token: str) -> str:
    """A token whose claims were widened after signing (signature kept)."""
    head, payload, sig = token.split('.')
    claims = json.loads(base64.urlsafe_b64decode(payload + '=' * (-len(payload) % 4)))
    claims['access'] = [{'type': 'repository', 'name': 'teamx/app',
                         'actions': ['pull', 'push', 'delete']}]
    claims['sub'] = 'admin'
    raw = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b'=').decode()
    return f'{head}.{raw}.{sig}'


def test_tokens_are_bound_to_their_scope(tmp_path: Path, htpasswd: Path,
                                         access_file: Path) -> None:
    """A pull token does not push; a token for one repository does not open
    another (even one its holder could get a token for); Basic credentials are no
    substitute for a token."""
    world = make_world(tmp_path, TOKEN, htpasswd, access_file)
    pull = auth_for(world, 'dev', ['repository:team/app:pull'])
    assert world.app.get('/v2/team/app/tags/list', headers=pull).status_code == 200
    params = assert_unauthorized(world.app.post('/v2/team/app/blobs/uploads/',
                                                headers=pull), 'bearer')
    assert params['error'] == 'insufficient_scope'
    assert params['scope'] == 'repository:team/app:pull,push'
    params = assert_unauthorized(world.app.get('/v2/public/lib/tags/list',
                                               headers=pull), 'bearer')
    assert params['error'] == 'insufficient_scope'
    assert params['scope'] == 'repository:public/lib:pull'
    r = world.app.get('/v2/team/app/tags/list', headers={
        'Authorization': basic_header('dev', PASSWORDS['dev'])})
    assert_unauthorized(r, 'bearer')
    # In basic mode a bearer token is not a credential; /token is not served.
    basic = make_world(tmp_path / 'basic', BASIC, htpasswd, access_file)
    assert_unauthorized(basic.app.get('/v2/team/app/tags/list', headers=pull), 'basic')
    assert basic.app.get(token_url(['repository:team/app:pull'])).status_code == 404


# ---------------------------------------------------------- failed logins ----
@pytest.mark.parametrize('mode', [BASIC, TOKEN], ids=['basic', 'token'])
def test_failed_logins_are_limited_with_429_and_retry_after(
        mode: Mode, tmp_path: Path, htpasswd: Path, access_file: Path) -> None:
    world = make_world(tmp_path, mode, htpasswd, access_file, login_failures=3)
    tc = world.app.tc
    wrong = {'Authorization': basic_header(*WRONG)}
    right = {'Authorization': basic_header('dev', PASSWORDS['dev'])}
    url = '/v2/team/app/tags/list' if mode.auth == 'basic' else token_url(
        ['repository:team/app:pull'])

    def call(headers: Headers, addr: str = '192.0.2.1') -> Any:
        return tc.simulate_get(url.partition('?')[0], query_string=url.partition('?')[2],
                               headers=headers, remote_addr=addr)

    assert call(right).status_code == 200  # successes do not count
    for _ in range(3):
        assert call(wrong).status_code == 401
    for headers in (wrong, right):  # locked out: even the right password waits
        r = call(headers)
        assert r.status_code == 429, r.content
        assert r.json['errors'][0]['code'] == 'TOOMANYREQUESTS'
        assert 1 <= int(r.headers['retry-after']) <= 61
    if mode.auth == 'token':  # the POST form counts against the same budget
        form = urlencode({'grant_type': 'password', 'username': 'dev',
                          'password': PASSWORDS['dev'], 'service': 'oci-ref'})
        r = tc.simulate_post('/token', body=form, remote_addr='192.0.2.1', headers={
            'Content-Type': 'application/x-www-form-urlencoded'})
        assert r.status_code == 429
    # Another client is not locked out, and anonymous requests are not logins.
    assert call(right, addr='192.0.2.2').status_code == 200
    anonymous = call({}, addr='192.0.2.1')
    assert anonymous.status_code != 429


# ------------------------------------------------------------ constant time ----
def test_unknown_users_cost_a_bcrypt_check(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path, htpasswd: Path,
                                           access_file: Path) -> None:
    """Htpasswd.verify runs bcrypt.checkpw for unknown users too (over HTTP, basic
    and token)."""
    import bcrypt

    calls: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return bool(real(password, hashed))

    monkeypatch.setattr(bcrypt, 'checkpw', counting)
    for mode in (BASIC, TOKEN):
        world = make_world(tmp_path / mode.name, mode, htpasswd, access_file)
        url = '/v2/' if mode.auth == 'basic' else token_url([])
        for user, password in [('nobody', 'x'), ('dev', 'wrong'),
                               ('dev', PASSWORDS['dev'])]:
            calls.clear()
            r = world.app.get(url, headers={'Authorization': basic_header(user, password)})
            assert r.status_code == (200 if password == PASSWORDS['dev'] else 401)
            assert len(calls) == 1, (mode.name, user, calls)
            assert calls[0].startswith((b'$2y$', b'$2b$', b'$2a$'))


def test_a_file_written_by_htpasswd_B_logs_in(tmp_path: Path, access_file: Path) -> None:
    """A file made by the real `htpasswd -B` (apache2-utils; under CI=true it must
    be installed): its users log in, in basic and token mode, and a wrong password
    is refused."""
    users = {'dev': PASSWORDS['dev'], 'reader': PASSWORDS['reader']}
    path = write_htpasswd(tmp_path / 'htpasswd', users, binary=True)
    lines = path.read_text().splitlines()
    assert [line.split(':', 1)[0] for line in lines] == list(users)
    for line in lines:
        assert re.fullmatch(r'[^:]+:\$2y\$05\$[./A-Za-z0-9]{53}', line), line
    for mode in (BASIC, TOKEN):
        world = make_world(tmp_path / mode.name, mode, path, access_file)
        url = '/v2/' if mode.auth == 'basic' else token_url([])
        for user, password in users.items():
            r = world.app.get(url, headers={'Authorization': basic_header(user, password)})
            assert r.status_code == 200, (mode.name, user, r.content)
        r = world.app.get(url, headers={'Authorization': basic_header('dev', 'wrong')})
        assert r.status_code == 401
