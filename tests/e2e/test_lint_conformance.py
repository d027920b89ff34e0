"""With `--lint` the registry still answers as the spec says: the upstream
conformance suites pass against `oci-ref serve --lint` exactly as without it, and
the requests the suites send on purpose to test a registry's refusals (chunks out of
order, hand-picked `last` values) are what the linter reports."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from oci_ref.lint.report import build
from oci_ref.lint.store import SQLiteLintStore
from tests.e2e.test_conformance import _missing, runner

pytestmark = pytest.mark.e2e

# run -> rules its deliberate negative tests must trip (conformance/README.md lists
# the suites' cases; e.g. legacy "Retry previous blob chunk should return 416").
EXPECTED = {'legacy': {'chunk-out-of-order'},
            'all': {'chunk-out-of-order', 'pagination-link'}}


@pytest.mark.parametrize('run', sorted(EXPECTED))
def test_suite_passes_with_the_linter_on(run: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    spec = runner.RUNS[run]
    if runner.binary(spec.suite) is None:
        _missing('conformance suite binaries not found (set CONFORMANCE_DIR; see '
                 'conformance/README.md)')
    monkeypatch.setenv('CONFORMANCE_ENGINE', 'none')
    linted = dataclasses.replace(spec, server={**spec.server, 'lint': True})
    outcome = runner.run_one(linted, tmp_path, runner.skip_list())
    assert outcome.ok, (outcome.line(), outcome.failed_cases, outcome.unexpected_skips,
                        outcome.note)
    store = SQLiteLintStore(tmp_path / run / 'server' / 'data')
    try:
        report = build(store.findings(), store.clients())
    finally:
        store.close()
    fired = {r['id'] for c in report['clients'] for r in c['rules']}
    assert EXPECTED[run] <= fired, fired
    # A conformant suite's ordinary requests are clean: nothing on manifests or
    # upload URLs built by hand.
    assert not fired & {'manifest-content-type', 'manifest-accept',
                        'upload-url-hand-built'}, fired
    assert sum(c['requests'] for c in report['clients']) > 100
