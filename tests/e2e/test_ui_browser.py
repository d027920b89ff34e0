"""The web view in a real browser: Debian's headless chromium driven by playwright,
against a real `oci-ref serve` with basic auth and per-repository rules, holding
what real clients pushed: a multi-arch index (skopeo), an SBOM attached through
``subject`` (oras), a key-based signature under the ``sha256-<hex>.sig`` tag
(cosign), an extra tag (crane).

Every page visit fails the test if the page opened a dialog or logged a Content
Security Policy violation (a script tried to run). The screenshots are taken here,
from these pages: into build/ui-screenshots/ by default (a test run leaves the tree
clean), into docs/ui/ with `make screenshots` (OCI_REF_SCREENSHOTS names the folder).

chromium, playwright or a client missing: a skip locally, a failure under CI=true.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.interop.auth import basic_header, write_htpasswd
from tests.interop.conftest import find_client, missing
from tests.interop.layout import write_image_layout, write_index_layout
from tests.interop.util import run
from tests.support import OCI_MANIFEST, Server, push_image

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHROMIUM = '/usr/bin/chromium'
# Debian's chromium, quiet and offline: no first-run UI, no background fetches.
CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
                  '--no-first-run', '--disable-background-networking',
                  '--disable-component-update', '--disable-sync']
SHOTS = Path(os.environ.get('OCI_REF_SCREENSHOTS')
             or Path(__file__).resolve().parents[2] / 'build' / 'ui-screenshots')
PW = {'admin': 'admin-browser-pw', 'reader': 'reader-browser-pw'}
ACCESS = '''
[[rule]]
repository = "*"
principals = ["admin"]
actions = ["pull", "push", "delete"]

[[rule]]
repository = "public/*"
principals = ["reader"]
actions = ["pull"]

[catalog]
principals = ["admin", "reader"]
'''
# Both run only if escaping failed: either sets window.__pwned or opens a dialog.
SCRIPT = '<script>window.__pwned = 1; alert("xss")</script>'
IMG = '"><img src=x onerror="window.__pwned = 2; alert(2)">'
SBOM_TYPE = 'application/vnd.example.sbom.v1+json'


# ---------------------------------------------------------------- the world ----
@dataclass
class World:
    server: Server
    host: str
    base: Path
    index: str = ''
    children: list[str] = field(default_factory=list)
    sbom: str = ''
    signature: str = ''
    secret: str = ''
    hostile: str = ''
    long_tag: str = 'L' * 128

    def api(self, user: str = 'admin') -> httpx.Client:
        return httpx.Client(base_url=self.server.url, timeout=60,
                            headers={'Authorization': basic_header(user, PW[user])})


def _docker_config(dir: Path, host: str) -> Path:
    """A docker config.json with the admin's credentials (cosign, crane)."""
    dir.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f'admin:{PW["admin"]}'.encode()).decode()
    (dir / 'config.json').write_text(json.dumps({'auths': {host: {'auth': auth}}}))
    return dir


@pytest.fixture(scope='module')
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp('ui-browser')
    htpasswd = write_htpasswd(base / 'htpasswd', PW)
    (base / 'access.toml').write_text(ACCESS)
    server = Server(base / 'data', '--auth', 'basic', '--htpasswd', str(htpasswd),
                    '--access', str(base / 'access.toml'))
    try:
        w = World(server, f'127.0.0.1:{server.port}', base)
        _push_with_clients(w, base)
        yield w
    finally:
        server.stop()


def _push_with_clients(w: World, base: Path) -> None:
    skopeo, oras, cosign, crane = (find_client(n) for n in
                                   ('skopeo', 'oras', 'cosign', 'crane'))
    home = base / 'home'
    docker = _docker_config(home / '.docker', w.host)
    env = {'HOME': str(home), 'DOCKER_CONFIG': str(docker),
           'REGISTRY_AUTH_FILE': str(docker / 'config.json')}
    creds = f'admin:{PW["admin"]}'

    # skopeo: a multi-arch OCI index with its two platform images.
    w.index = write_index_layout(base / 'multi', 'v1', seed='ui browser')
    run([skopeo, 'copy', '--all', '--dest-tls-verify=false', '--dest-creds', creds,
         f'oci:{base / "multi"}:v1', f'docker://{w.host}/public/multi:v1'],
        registry=w.server, env=env)
    with w.api() as c:
        index = c.get(f'/v2/public/multi/manifests/{w.index}').json()
    w.children = [m['digest'] for m in index['manifests']]

    # oras: an SBOM attached to the index through subject, with a hostile annotation.
    (base / 'sbom.json').write_text('{"packages": []}\n')
    attached = run([oras, 'attach', '--plain-http', '-u', 'admin', '-p', PW['admin'],
                    '--distribution-spec', 'v1.1-referrers-api',
                    '--artifact-type', SBOM_TYPE, '--annotation',
                    f'org.example.note={SCRIPT}', '--format', 'json',
                    f'{w.host}/public/multi@{w.index}', 'sbom.json:application/json'],
                   registry=w.server, env=env, cwd=base)
    w.sbom = json.loads(attached.stdout)['digest']

    # cosign: a key-based signature, stored under the sha256-<hex>.sig tag.
    keys = base / 'keys'
    keys.mkdir()
    cosign_env = {**env, 'COSIGN_PASSWORD': 'ui', 'TUF_ROOT': str(base / 'tuf'),
                  'SIGSTORE_NO_CACHE': '1'}
    run([cosign, 'generate-key-pair'], cwd=keys, env=cosign_env)
    run([cosign, 'sign', '--key', str(keys / 'cosign.key'), '--tlog-upload=false', '-y',
         '--allow-insecure-registry', '--allow-http-registry',
         f'{w.host}/public/multi@{w.index}'], registry=w.server, env=cosign_env, cwd=base,
        timeout=180)
    with w.api() as c:
        sig_tag = f'sha256-{w.index[7:]}.sig'
        r = c.head(f'/v2/public/multi/manifests/{sig_tag}', headers={
            'Accept': OCI_MANIFEST})
        assert r.status_code == 200, 'cosign did not store its signature tag'
        w.signature = r.headers['docker-content-digest']

    # crane: more tags on the index (deleted through the browser later, the
    # last one pushed with JavaScript on).
    for tag in ('doomed-nojs', 'doomed'):
        run([crane, 'tag', '--insecure', f'{w.host}/public/multi:v1', tag],
            registry=w.server, env=env)

    # A private repository the reader may not pull.
    write_image_layout(base / 'secret', 'v1', seed='private secret')
    run([skopeo, 'copy', '--dest-tls-verify=false', '--dest-creds', creds,
         f'oci:{base / "secret"}:v1', f'docker://{w.host}/private/secret:v1'],
        registry=w.server, env=env)
    with w.api() as c:
        w.secret = c.head('/v2/private/secret/manifests/v1', headers={
            'Accept': OCI_MANIFEST}).headers['docker-content-digest']
        # Hostile content no client would write: markup in annotation keys and values.
        w.hostile, _ = push_image(c, 'public/hostile', 'v1', annotations={
            'org.example.script': SCRIPT, 'org.example.img': IMG,
            SCRIPT: 'a key with markup', 'org.example.long': 'z' * 5000})
        push_image(c, 'public/hostile', w.long_tag, seed='long tag')


# ------------------------------------------------------------------ browser ----
@pytest.fixture(scope='module')
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK) and shutil.which('chromium') is None:
        missing('chromium is not installed (make clients: the chromium component)')
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing('playwright is not installed (pip install -e .[test])')
    with sync_playwright() as p:
        # launch() gives every browser a fresh temporary --user-data-dir.
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS,
                              headless=True)
        yield b
        b.close()


@dataclass
class Tab:
    """A page of one user's browser context, with hooks that catch any script."""

    page: Any
    base: str
    dialogs: list[str] = field(default_factory=list)
    csp: list[str] = field(default_factory=list)

    def go(self, path: str, status: int = 200) -> Any:
        response = self.page.goto(self.base + path)
        assert response is not None and response.status == status, (path, response)
        self.assert_inert()
        return response

    def assert_inert(self) -> None:
        assert self.dialogs == [], f'a script opened dialogs: {self.dialogs}'
        assert self.csp == [], f'a script or style tried to run: {self.csp}'
        assert self.page.evaluate('window.__pwned') is None

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f'{name}.png'), full_page=True)

    def hrefs(self, selector: str = 'a') -> list[str]:
        return list(self.page.eval_on_selector_all(
            selector, 'els => els.map(e => e.getAttribute("href"))'))


@pytest.fixture(scope='module')
def tab(browser: Any, world: World) -> Iterator[Callable[..., Tab]]:
    contexts: list[Any] = []

    def make(user: str | None, *, javascript: bool = True) -> Tab:
        ctx = browser.new_context(
            http_credentials={'username': user, 'password': PW[user]} if user else None,
            java_script_enabled=javascript, viewport={'width': 1280, 'height': 860})
        contexts.append(ctx)
        page = ctx.new_page()
        t = Tab(page, world.server.url)
        page.on('dialog', lambda d: (t.dialogs.append(d.message), d.dismiss()))
        page.on('console', lambda m: t.csp.append(m.text)
                if 'Content Security Policy' in m.text else None)
        return t

    yield make
    for ctx in contexts:
        ctx.close()


# -------------------------------------------------------------------- views ----
def test_repository_list_shows_what_each_user_may_pull(tab: Callable[..., Tab],
                                                       world: World) -> None:
    admin = tab('admin')
    admin.go('/ui/')
    names = admin.page.locator('#repositories tbody td:first-child').all_inner_texts()
    assert names == ['private/secret', 'public/hostile', 'public/multi']
    admin.shot('repositories')
    admin.page.fill('input[name=q]', 'multi')
    admin.page.click('form.search button')
    assert admin.page.locator('#repositories tbody tr').count() == 1
    admin.page.click('text=public/multi')
    assert admin.page.url == f'{world.server.url}/ui/r/public/multi/'

    reader = tab('reader')
    reader.go('/ui/')
    assert reader.page.locator('#repositories tbody td:first-child').all_inner_texts() == [
        'public/hostile', 'public/multi']
    assert 'secret' not in reader.page.content()


def test_repository_view_lists_tags_platforms_and_sorts(tab: Callable[..., Tab],
                                                        world: World) -> None:
    t = tab('admin')
    t.go('/ui/r/public/multi/')
    rows = t.page.locator('#tags tbody tr')
    tags = rows.locator('td.tag').all_inner_texts()
    sig_tag = f'sha256-{world.index[7:]}.sig'
    assert tags == sorted(['v1', 'doomed', 'doomed-nojs', sig_tag])
    v1 = rows.filter(has=t.page.locator('td.tag', has_text='v1'))
    text = v1.inner_text()
    assert 'linux/amd64' in text and 'linux/arm64' in text and 'index' in text
    assert world.index[:19] in text
    t.shot('repository')
    # Sorted by push time, newest first: crane's tag came last.
    t.page.click('th >> text=Pushed')
    assert rows.locator('td.tag').first.inner_text() == 'doomed'
    assert 'order=asc' in t.page.url or 'order=desc' in t.page.url
    t.page.click('td.tag >> text=v1')
    assert t.page.url.endswith('/ui/r/public/multi/-/m/v1')


def test_manifest_view_tree_referrers_verdict_and_pull_commands(
        tab: Callable[..., Tab], world: World) -> None:
    t = tab('admin')
    t.go('/ui/r/public/multi/-/m/v1')
    assert t.page.inner_text('#digest') == world.index
    tree = t.page.locator('#descriptors')
    assert tree.locator('li.manifest').count() == 2
    assert tree.locator('li.layer').count() == 2 and tree.locator('li.config').count() == 2
    for platform in ('linux/amd64', 'linux/arm64'):
        assert platform in tree.inner_text()
    referrers = t.page.inner_text('#referrers')
    assert SBOM_TYPE in referrers and 'subject' in referrers
    assert f'tag sha256-{world.index[7:]}.sig' in referrers
    assert SCRIPT in referrers  # the annotation, shown as text
    pull = t.page.inner_text('#pull')
    assert f'podman pull --tls-verify=false {world.host}/public/multi@{world.index}' in pull
    assert 'Valid:' in t.page.inner_text('#verdict')
    assert json.loads(t.page.inner_text('#raw'))['manifests'][0]['digest'] == \
        world.children[0]
    t.shot('manifest')

    # The tree leads to each platform manifest, which shows its config and layers.
    t.page.click(f'#descriptors a[href$="{world.children[1]}"]')
    assert t.page.url.endswith(f'/-/m/{world.children[1]}')
    assert t.page.inner_text('#platform') == 'linux/arm64'
    assert 'application/vnd.oci.image.layer.v1.tar+gzip' in t.page.inner_text(
        '#descriptors')
    # The SBOM's page links back to its subject.
    t.go(f'/ui/r/public/multi/-/m/{world.sbom}')
    t.page.click('#subject')
    assert t.page.url.endswith(f'/-/m/{world.index}')


@pytest.mark.parametrize('javascript', [True, False], ids=['js', 'no-js'])
def test_referrer_graph_is_drawn_and_followed_link_by_link(
        tab: Callable[..., Tab], world: World, javascript: bool) -> None:
    t = tab('admin', javascript=javascript)
    t.go('/ui/r/public/multi/-/m/v1')
    t.page.click('#graph-link')
    assert t.page.url.endswith(f'/ui/r/public/multi/-/referrers/{world.index}')
    svg = t.page.locator('svg#graph')
    boxes = svg.locator('a.gnode')
    assert boxes.count() == 3  # the index, the SBOM (subject), the signature (tag)
    assert svg.locator('line').count() == 2
    assert svg.bounding_box()['width'] > 600
    if javascript:
        t.shot('referrers')
    # An SVG link, no script: to the signature found through the tag schema.
    svg.locator(f'a.gnode[href$="{world.signature}"]').click()
    assert t.page.url.endswith(f'/-/m/{world.signature}')
    assert 'application/vnd.dev.cosign.simplesigning.v1+json' in t.page.inner_text(
        '#descriptors')


# ---------------------------------------------------------- hostile content ----
def test_hostile_annotations_and_long_tags_render_inert(tab: Callable[..., Tab],
                                                        world: World) -> None:
    t = tab('admin')
    t.go('/ui/r/public/hostile/-/m/v1')
    facts = t.page.inner_text('main')
    assert SCRIPT in facts and IMG in facts  # shown literally, as text
    assert t.page.locator('main script, main img').count() == 0
    # The long value wraps inside the page instead of widening it.
    assert t.page.evaluate('document.documentElement.scrollWidth') <= 1280
    t.shot('hostile')
    t.go('/ui/r/public/hostile/')
    assert world.long_tag in t.page.inner_text('#tags')
    assert t.page.evaluate('document.documentElement.scrollWidth') <= 1280
    for path in (f'/ui/r/public/hostile/-/m/{world.long_tag}',
                 f'/ui/r/public/multi/-/m/{world.sbom}',
                 f'/ui/r/public/multi/-/referrers/{world.index}'):
        t.go(path)


# ------------------------------------------------------------------- access ----
def test_a_user_without_pull_rights_sees_nothing_of_a_private_repository(
        tab: Callable[..., Tab], world: World) -> None:
    reader = tab('reader')
    unknown = reader.go('/ui/r/no/such/repo/', status=404)
    assert unknown is not None
    expected = reader.page.inner_text('main')
    for path in ('/ui/r/private/secret/', '/ui/r/private/secret/-/m/v1',
                 f'/ui/r/private/secret/-/m/{world.secret}',
                 f'/ui/r/private/secret/-/referrers/{world.secret}',
                 '/ui/r/private/secret/-/delete?reference=v1'):
        reader.go(path, status=404)
        assert reader.page.inner_text('main') == expected, path
        assert world.secret[7:19] not in reader.page.content()
    # No delete buttons where the reader may not delete.
    reader.go('/ui/r/public/multi/')
    assert reader.page.locator('a.danger').count() == 0

    # Token mode: a second server on the same storage; the browser's Basic prompt
    # takes the htpasswd password and grants what /token would.
    token = Server(world.server.root, '--auth', 'token',
                   '--htpasswd', str(world.base / 'htpasswd'),
                   '--access', str(world.base / 'access.toml'))
    try:
        t = tab('reader')
        t.base = token.url
        t.go('/ui/')
        assert t.page.locator('#repositories tbody td:first-child').all_inner_texts() == [
            'public/hostile', 'public/multi']
        t.go('/ui/r/private/secret/', status=404)
        assert t.page.inner_text('main') == expected
        t.go('/ui/r/public/multi/-/m/v1')
        assert t.page.inner_text('#digest') == world.index
    finally:
        token.stop()

    # Without credentials the browser is asked for them (headless chromium cannot
    # show its prompt, so the challenge is read through the context's requests).
    anonymous = tab(None)
    for path in ('/ui/', '/ui/r/public/multi/', '/ui/r/private/secret/'):
        r = anonymous.page.request.get(anonymous.base + path)
        assert r.status == 401, path
        assert r.headers['www-authenticate'].startswith('Basic realm=')
        assert 'secret' not in r.text() and 'multi' not in r.text()


def test_delete_through_the_browser_is_gone_from_the_api(tab: Callable[..., Tab],
                                                         world: World) -> None:
    t = tab('admin')
    t.go('/ui/r/public/multi/')
    row = t.page.locator('#tags tbody tr').filter(
        has=t.page.locator('td.tag', has_text=re.compile('^doomed$')))
    row.locator('a.danger').click()
    assert '/ui/r/public/multi/-/delete?reference=doomed' in t.page.url
    assert 'removes the tag' in t.page.inner_text('main')
    t.shot('delete')
    with world.api() as c:  # nothing happens before the confirmation
        assert c.get('/v2/public/multi/manifests/doomed').status_code == 200
    t.page.click('#confirm-delete')
    assert t.page.url.endswith('/ui/r/public/multi/?deleted=doomed')
    assert 'Deleted doomed' in t.page.inner_text('main')
    assert 'doomed' not in t.page.locator('#tags td.tag').all_inner_texts()
    t.assert_inert()
    with world.api() as c:
        assert c.get('/v2/public/multi/manifests/doomed').status_code == 404
        assert c.get('/v2/public/multi/manifests/v1').status_code == 200
        tags = c.get('/v2/public/multi/tags/list').json()['tags']
    assert 'doomed' not in tags and 'v1' in tags


def test_every_view_and_a_delete_work_with_javascript_off(tab: Callable[..., Tab],
                                                          world: World) -> None:
    t = tab('admin', javascript=False)
    t.go('/ui/')
    t.page.click('#repositories >> text=public/multi')
    assert t.page.locator('#tags td.tag').count() >= 3
    t.page.click('td.tag >> text=v1')
    assert t.page.locator('#descriptors li.manifest').count() == 2
    t.page.click('#graph-link')
    assert t.page.locator('svg#graph a.gnode').count() == 3
    t.go('/ui/r/public/multi/-/delete?reference=doomed-nojs')
    t.page.click('#confirm-delete')  # a plain form post
    assert t.page.url.endswith('/ui/r/public/multi/?deleted=doomed-nojs')
    with world.api() as c:
        assert c.get('/v2/public/multi/manifests/doomed-nojs').status_code == 404
