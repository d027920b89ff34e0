"""The client linter (``oci-ref serve --lint``): records, per client, every request
that breaks or bends the distribution spec, while the registry answers as the spec
says.

- :mod:`oci_ref.lint.rules`: the rules (id, spec text, section) and their checks;
- :mod:`oci_ref.lint.recorder`: the ASGI wrapper that watches each exchange;
- :mod:`oci_ref.lint.store`: what it saw, shared by every worker (SQLite);
- :mod:`oci_ref.lint.report`: the report (JSON, HTML, text) and its resource.
"""

from __future__ import annotations

from typing import Any

from oci_ref.config import Config
from oci_ref.http import ASGIApp
from oci_ref.lint.recorder import LintRecorder
from oci_ref.lint.report import LintReport
from oci_ref.lint.rules import RULES
from oci_ref.lint.store import LintStore, SQLiteLintStore

REPORT_PATHS = ('/lint/report', '/lint/report.html')


def routes(store: LintStore) -> list[tuple[str, Any, str | None]]:
    report = LintReport(store)
    return [(REPORT_PATHS[0], report, None), (REPORT_PATHS[1], report, 'html')]


def wrap(app: ASGIApp, config: Config, store: LintStore) -> LintRecorder:
    return LintRecorder(app, store, is_proxy=bool(config.upstream),
                        auth_on=config.auth != 'none',
                        manifest_max_bytes=config.manifest_max_bytes)


__all__ = ['REPORT_PATHS', 'RULES', 'LintRecorder', 'LintStore', 'SQLiteLintStore',
           'routes', 'wrap']
