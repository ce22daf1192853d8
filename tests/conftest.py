import os, pytest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent/'shared'/'data'

def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: real-data or long checks (skip cleanly when ../shared/data is missing)')
    os.environ.setdefault('MELANET_DATA_DIR', str(ROOT/'data'))   # share the demo-data cache with the notebooks
    os.environ.setdefault('MPLBACKEND', 'Agg')

@pytest.fixture(autouse=True, scope='session')
def temp_inside_pytest_basetemp(tmp_path_factory):
    "Temporary folders made by the library, the notebooks' kernels and CLI subprocesses go under pytest's own temporary"
    "folder, which pytest rotates (the last 3 runs are kept), not into /tmp, where every `make test` left ~400 MB."
    import tempfile
    d, old = tmp_path_factory.mktemp('tmp'), os.environ.get('TMPDIR')
    os.environ['TMPDIR'], tempfile.tempdir = str(d), None   # subprocesses read TMPDIR; this process re-reads it
    yield d
    if old is None: os.environ.pop('TMPDIR', None)
    else: os.environ['TMPDIR'] = old
    tempfile.tempdir = None
