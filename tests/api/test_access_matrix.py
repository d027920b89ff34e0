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
pages; mounts from unreadable repositories degrade to 202; ``/v2/``. The token
endpoint, the failed-login limit and bcrypt are in test_access_tokens.py; the
world, the oracle and the helpers in access_world.py.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.api.access_world import (
    ACTIONS,
    ALL,
    BASIC,
    CALLERS,
    MODES,
    NOTHING,
    PASSWORDS,
    PULL,
    REPOS,
    RULE_GRANTS,
    TOKEN,
    WRONG,
    Cell,
    Headers,
    Mode,
    World,
    assert_unauthorized,
    auth_for,
    claims_of,
    credentials,
    denial_problem,
    describe,
    expected,
    get_token,
    granted,
    make_world,
    may_list_catalog,
    scope_for,
    token_url,
)
from tests.interop.auth import basic_header
from tests.support import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    Resp,
    digest,
    push_blob,
    push_image,
)


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
