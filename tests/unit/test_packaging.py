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


def test_the_wheel_holds_every_package_template_and_schema(tmp_path: Path) -> None:
    """`pip install oci-ref` installs the wheel, not the tree: a package missing from
    pyproject's list (oci_ref.storage and oci_ref.lint were, hidden by the
    editable install) would break every import of it."""
    import shutil
    import zipfile

    root = Path(__file__).resolve().parents[2]
    # A copy: setuptools builds in the tree, and a build/lib left by an earlier
    # build would slip into the wheel what pyproject leaves out.
    tree = tmp_path / 'tree'
    skip = shutil.ignore_patterns('__pycache__', '*.egg-info')
    for part in ('oci_ref', 'schemas'):
        shutil.copytree(root / part, tree / part, ignore=skip)
    for part in ('pyproject.toml', 'README.md'):
        shutil.copy(root / part, tree / part)
    out = subprocess.run(
        [sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '-w', str(tmp_path),
         str(tree)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    [wheel] = tmp_path.glob('oci_ref-*.whl')
    names = set(zipfile.ZipFile(wheel).namelist())
    source = root / 'oci_ref'
    wanted = {p.relative_to(root).as_posix() for p in source.rglob('*.py')
              if '__pycache__' not in p.parts}
    wanted |= {f'oci_ref/ui/{p.relative_to(source / "ui").as_posix()}'
               for d in ('templates', 'static') for p in (source / 'ui' / d).rglob('*')
               if p.is_file()}
    wanted |= {f'oci_ref/_schemas/{p.name}' for p in (root / 'schemas').glob('*.json')}
    assert wanted - names == set()
