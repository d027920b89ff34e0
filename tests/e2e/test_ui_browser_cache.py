"""The web view of a registry that is also a pull-through cache (issues 13 and 16),
in Debian's headless chromium (the browser fixture and Tab of test_ui_browser.py):
skopeo pulls an image through the cache from a second `oci-ref serve`; the
repository list tells it from pushed content, and its tag table says when each
tag was last revalidated at the upstream."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e.test_ui_browser import Tab, browser  # noqa: F401 (a fixture)
from tests.interop.conftest import find_client
from tests.interop.util import run
from tests.support import Server, push_image

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
WHEN = re.compile(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$')


@pytest.fixture(scope='module')
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp('ui-cache')
    upstream = Server(base / 'upstream')
    try:
        with upstream.client() as c:
            push_image(c, 'lib/app', 'v1', seed='ui cache v1')
            push_image(c, 'lib/app', 'v2', seed='ui cache v2')
        (base / 'mirror.toml').write_text(
            f'[[upstream]]\nname = "up.test"\nurl = "{upstream.url}"\ntag_ttl = 3600\n')
        server = Server(base / 'mirror', '--config', str(base / 'mirror.toml'))
        try:
            with server.client() as c:
                push_image(c, 'mine/app', 'v1', seed='pushed here')
            # A real client pulls v1 through the cache (manifest, config, layer).
            skopeo = find_client('skopeo')
            run([skopeo, 'copy', '--src-tls-verify=false',
                 f'docker://127.0.0.1:{server.port}/up.test/lib/app:v1',
                 f'oci:{base / "pulled"}:v1'], registry=server)
            yield server
        finally:
            server.stop()
    finally:
        upstream.stop()


@pytest.fixture(scope='module')
def tab(browser: Any, mirror: Server) -> Iterator[Callable[[], Tab]]:  # noqa: F811
    contexts: list[Any] = []

    def make() -> Tab:
        ctx = browser.new_context(viewport={'width': 1280, 'height': 860})
        contexts.append(ctx)
        page = ctx.new_page()
        t = Tab(page, mirror.url)
        page.on('dialog', lambda d: (t.dialogs.append(d.message), d.dismiss()))
        page.on('console', lambda m: t.csp.append(m.text)
                if 'Content Security Policy' in m.text else None)
        return t

    yield make
    for ctx in contexts:
        ctx.close()


def test_cached_repositories_are_marked_and_tags_say_when_revalidated(
        tab: Callable[[], Tab], mirror: Server) -> None:
    t = tab()
    t.go('/ui/')
    rows = t.page.locator('#repositories tbody tr')
    seen = {r.locator('td').first.inner_text(): r.locator('td.source').inner_text()
            for r in rows.all()}
    assert seen == {'mine/app': 'pushed', 'up.test/lib/app': 'cached from up.test'}
    t.shot('repositories-cached')
    t.page.click('text=up.test/lib/app')
    assert t.page.url == f'{mirror.url}/ui/r/up.test/lib/app/'
    assert t.page.locator('#cached-from').inner_text() == 'cached from up.test'
    headers = t.page.locator('#tags thead th').all_inner_texts()
    assert 'Fetched' in headers and 'Revalidated' in headers and 'Pushed' not in headers
    # Only what was pulled is cached: v1, revalidated when skopeo asked for it.
    tags = t.page.locator('#tags tbody td.tag').all_inner_texts()
    assert tags == ['v1']
    when = t.page.locator('#tags tbody td.revalidated').all_inner_texts()
    assert len(when) == 1 and WHEN.match(when[0]), when
    assert t.page.locator('#tags a.danger').count() == 0  # evicted, never deleted
    t.shot('repository-cached')
    t.page.click('td.tag >> text=v1')
    assert t.page.url.endswith('/ui/r/up.test/lib/app/-/m/v1')
    t.assert_inert()
    # Pushed content: no cache marks.
    t.go('/ui/r/mine/app/')
    assert t.page.locator('#cached-from').count() == 0
    assert 'Revalidated' not in t.page.locator('#tags thead').inner_text()
