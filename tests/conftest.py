import os, pytest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent/'shared'/'data'

def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: real-data or long checks (skip cleanly when ../shared/data is missing)')
    os.environ.setdefault('MELANET_DATA_DIR', str(ROOT/'data'))   # share the demo-data cache with the notebooks
    os.environ.setdefault('MPLBACKEND', 'Agg')
