"Every notebook in nbs/ runs under papermill with `smoke=True`, into a temp dir, never overwriting the source."
import nbformat, papermill as pm, pytest
from conftest import ROOT

NOTEBOOKS = sorted((ROOT/'nbs').glob('*.ipynb'))

def parameter_cells(path):
    return [c for c in nbformat.read(path, as_version=4).cells if 'parameters' in c.get('metadata', {}).get('tags', [])]

def test_notebooks_found(): assert len(NOTEBOOKS) >= 2, NOTEBOOKS

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_smoke(nb, tmp_path):
    cells = parameter_cells(nb)
    assert len(cells) == 1, f"{nb.name}: needs exactly one cell tagged 'parameters', found {len(cells)}"
    assert 'smoke' in cells[0].source, f"{nb.name}: the parameters cell has no `smoke` parameter"
    before = nb.read_bytes()
    out = tmp_path/nb.name
    pm.execute_notebook(str(nb), str(out), parameters=dict(smoke=True), kernel_name='python3',
                        cwd=str(tmp_path), progress_bar=False)
    executed = nbformat.read(out, as_version=4)
    assert any(c.get('outputs') for c in executed.cells if c.cell_type == 'code'), f"{nb.name}: produced no output"
    assert nb.read_bytes() == before, f"{nb.name}: source notebook was modified"
