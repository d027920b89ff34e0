"""The embedded default needs none of the scale-out extra (pyproject ``scale``):
`make run` and `pip install oci-ref` without extras must serve."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCALE_MODULES = ('psycopg', 'psycopg_pool', 'aiobotocore', 'botocore', 'boto3', 'moto')

PROBE = '''
import importlib.abc, sys
BLOCKED = set(sys.argv[2].split(','))

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition('.')[0] in BLOCKED:
            raise ModuleNotFoundError(f'No module named {name!r}', name=name)
        return None

sys.meta_path.insert(0, Absent())
import falcon.testing
import oci_ref.cli
from oci_ref.app import create_app
from oci_ref.config import Config
from pathlib import Path

app = create_app(Config(root=Path(sys.argv[1])))
r = falcon.testing.TestClient(app).simulate_get('/v2/')
print(r.status_code)
'''


def test_embedded_default_serves_without_the_scale_extra(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, '-c', PROBE, str(tmp_path / 'data'), ','.join(SCALE_MODULES)],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ['200'], out.stdout
