"The `melanet` console script: useful --help, one-line errors with a non-zero exit, no traceback."
import subprocess, sys, pytest
from pathlib import Path

MELANET = str(Path(sys.executable).with_name('melanet'))

def run(*args):
    return subprocess.run([MELANET, *args], capture_output=True, text=True, timeout=300)

def test_help_lists_subcommands_and_options():
    r = run('--help')
    assert r.returncode == 0
    for cmd in ['run', 'data', 'train-gan', 'synthesize', 'train', 'evaluate', 'predict']: assert cmd in r.stdout
    r = run('run', '--help')
    for opt in ['--data', '--out', '--size', '--backbone', '--epochs', '--seed', '--device', '--config', '--target', '--loss']: assert opt in r.stdout

@pytest.mark.parametrize('args, msg', [
    (['run', '--data', '/no/such/folder'], '/no/such/folder: dataset not found'),
    (['data', '--config', '/no/such.yaml'], '/no/such.yaml: config file not found'),
    (['run', '--device', 'tpu'], "device must be auto, cpu or cuda, got 'tpu'"),
    (['predict', '--model', '/no/model.pkl', 'x.jpg'], '/no/model.pkl: exported classifier not found'),
])
def test_bad_input_one_line_error(args, msg, tmp_path):
    r = run(*args, *(['--out', str(tmp_path)] if args[0] != 'predict' else []))
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [f'melanet: error: {msg}'], r.stderr
    assert 'Traceback' not in r.stderr

def test_bad_option_value_is_rejected_by_argparse(tmp_path):
    r = run('run', '--size', 'big', '--out', str(tmp_path))
    assert r.returncode == 2 and 'invalid int value' in r.stderr
    r = run('run', '--loss', 'hinge', '--target', 'diagnosis', '--out', str(tmp_path))
    assert r.returncode == 2 and "argument --loss: invalid choice: 'hinge'" in r.stderr

def test_diagnosis_target_on_binary_data_is_refused(tmp_path):
    "A diagnosis run on data without diagnoses stops at the data stage with one line naming the dataset."
    data = tmp_path/'binary'
    (data/'images').mkdir(parents=True)
    from PIL import Image
    rows = []
    for i, lab in enumerate(['benign', 'malignant'] * 3):
        Image.new('RGB', (16, 16), (40 * i, 90, 120)).save(data/'images'/f'x{i}.png')
        rows.append(f'x{i},{lab},{"test" if i >= 4 else "train"}')
    (data/'labels.csv').write_text('image_id,label,split\n' + '\n'.join(rows) + '\n')
    r = run('data', '--data', str(data), '--target', 'diagnosis', '--valid-pct', '0.5', '--out', str(tmp_path/'o'))
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [f"melanet: error: {data}: target 'diagnosis' but 6 row(s) have no diagnosis (add a diagnosis.csv)"], r.stderr

def test_data_subcommand_writes_table(tmp_path):
    r = run('data', '--out', str(tmp_path), '--smoke')
    assert r.returncode == 0, r.stderr
    table = tmp_path/'data'/'table.csv'
    assert table.is_file() and f'{table}' in r.stdout
    import pandas as pd
    df = pd.read_csv(table)
    assert set(df.split) == {'train', 'valid', 'test'} and df.image_id.is_unique
