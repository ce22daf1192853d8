"The `melanet` console script: fast --help, options checked before any work, one-line errors, subcommands that do what they say."
import json, shutil, subprocess, sys, time, pytest
import numpy as np, pandas as pd
from pathlib import Path
from PIL import Image

MELANET = str(Path(sys.executable).with_name('melanet'))

def run(*args, cwd=None):
    "The console script in a subprocess (for --help, speed and end-to-end checks)."
    return subprocess.run([MELANET, *map(str, args)], capture_output=True, text=True, timeout=600, cwd=cwd)

def call(*args):
    "`main` in this process (torch is imported once for all the error checks); returns what a subprocess would."
    import contextlib, io
    from melanet_nb.cli import main
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: main([str(a) for a in args])
        except SystemExit as e: code = e.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())

def one_line_error(r, msg):
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [l for l in r.stderr.strip().splitlines() if not l.startswith('melanet: note:')]
    assert lines == [f'melanet: error: {msg}'], r.stderr
    assert 'Traceback' not in r.stderr

def test_help_lists_subcommands_and_options():
    r = run('--help')
    assert r.returncode == 0
    for cmd in ['run', 'data', 'train-gan', 'synthesize', 'train', 'evaluate', 'predict', 'translate']: assert cmd in r.stdout
    r = run('run', '--help')
    for opt in ['--data', '--out', '--size', '--backbone', '--epochs', '--seed', '--device', '--config', '--target', '--loss']: assert opt in r.stdout
    assert 'classifier epochs with the body trainable (default: 8)' in ' '.join(r.stdout.split())
    assert '--tta {none,hflip,flips,dihedral}' in r.stdout and '--configs' in r.stdout and 'wgan' in r.stdout
    assert 'pickle' in run('predict', '--help').stdout

@pytest.mark.parametrize('args, msg', [
    (['--epochs', '0'], '--epochs: must be >= 1, got 0'), (['--epochs', '-1'], '--epochs: must be >= 1, got -1'),
    (['--freeze-epochs', '-2'], '--freeze-epochs: must be >= 0, got -2'), (['--gan-epochs', '0'], '--gan-epochs: must be >= 1'),
    (['--gan-width', '0'], '--gan-width: must be >= 1'), (['--wgan-width', '0'], '--wgan-width: must be >= 1'),
    (['--bs', '0'], '--bs: must be >= 2'),
    (['--gan-ckpt-every', '0'], '--gan-ckpt-every: must be >= 1'), (['--n-boot', '0'], '--n-boot: must be >= 100'),
    (['--valid-pct', '1.5'], '--valid-pct: must be > 0, < 1, got 1.5'), (['--synth-n', '-5'], '--synth-n: must be >= 1, got -5'),
    (['--n-demo', '-5'], '--n-demo: must be >= 12, got -5'), (['--size', 'big'], "--size: must be a whole number, got 'big'"),
    (['--device', 'tpu'], "--device: invalid choice: 'tpu'"), (['--loss', 'hinge'], "--loss: invalid choice: 'hinge'")])
def test_bad_numbers_are_refused_before_any_work(args, msg, tmp_path):
    t0 = time.time()
    r = run('run', *args, '--out', tmp_path/'o')
    assert r.returncode == 2 and f'argument {msg}' in r.stderr, r.stderr
    assert not (tmp_path/'o').exists()          # nothing written, no demo cache made

@pytest.mark.parametrize('text, msg', [
    ('smoke: "false"\nsize: big\nconfigs: baseline\n', "smoke must be true or false, got 'false' (str); size must be a whole number, got 'big' (str); configs must be a list of names, got 'baseline' (str)"),
    ('size: [64\n', 'cannot parse config'), ('epochs: 0\n', 'epochs must be >= 1, got 0'), ('sise: 64\n', "unknown option(s) ['sise']")])
def test_bad_config_file_values_name_the_file(text, msg, tmp_path):
    (tmp_path/'run.yaml').write_text(text)
    r = call('data', '--config', tmp_path/'run.yaml', '--out', tmp_path/'o')
    assert r.returncode == 2 and f'melanet: error: {tmp_path/"run.yaml"}: {msg}' in r.stderr, r.stderr
    assert 'Traceback' not in r.stderr

@pytest.mark.parametrize('args, msg', [
    (['run', '--data', '/no/such/folder'], '/no/such/folder: dataset not found'),
    (['data', '--config', '/no/such.yaml'], '/no/such.yaml: config file not found'),
    (['predict', '--model', '/no/model.pkl', 'x.jpg'], '/no/model.pkl: exported classifier not found'),
])
def test_bad_input_one_line_error(args, msg, tmp_path):
    one_line_error(call(*args, *(['--out', tmp_path] if args[0] != 'predict' else [])), msg)

def test_out_that_is_a_file_or_cannot_be_written(tmp_path):
    (tmp_path/'f').write_text('')
    one_line_error(call('data', '--smoke', '--out', tmp_path/'f'), f'{tmp_path/"f"}: --out is a file, not a folder')
    r = call('data', '--smoke', '--out', '/proc/melanet_out')
    assert r.returncode == 2 and r.stderr.startswith('melanet: error: /proc/melanet_out') and 'Traceback' not in r.stderr, r.stderr

def tiny_dataset(root, labels=('benign', 'malignant') * 4, n_test=4):
    (root/'images').mkdir(parents=True)
    rows = []
    for i, lab in enumerate(labels):
        Image.new('RGB', (16, 16), (30 * i, 90, 120)).save(root/'images'/f'x{i}.png')
        rows.append(f'x{i},{lab},{"test" if i >= len(labels) - n_test else "train"}')
    (root/'labels.csv').write_text('image_id,label,split\n' + '\n'.join(rows) + '\n')
    return root

def test_diagnosis_target_on_binary_data_is_refused(tmp_path):
    "A diagnosis run on data without diagnoses stops at the data stage with one line naming the dataset."
    data = tiny_dataset(tmp_path/'binary', ('benign', 'malignant') * 3, n_test=2)
    r = call('data', '--data', data, '--target', 'diagnosis', '--valid-pct', '0.5', '--out', tmp_path/'o')
    one_line_error(r, f"{data}: target 'diagnosis' but 6 row(s) have no diagnosis (add a diagnosis.csv)")

def test_editing_the_data_reruns_the_data_stage(tmp_path):
    data = tiny_dataset(tmp_path/'d', ('benign', 'malignant') * 6)
    args = ('data', '--data', data, '--valid-pct', '0.25', '--out', tmp_path/'o')
    r1, r2 = call(*args), call(*args)
    assert '== data: running' in r1.stdout and '== data: reused' in r2.stdout, (r1.stdout, r1.stderr, r2.stdout)
    labels = (data/'labels.csv').read_text().replace('x0,benign', 'x0,malignant')
    (data/'labels.csv').write_text(labels)
    r3 = call(*args)
    assert '== data: running' in r3.stdout, r3.stdout
    table = pd.read_csv(tmp_path/'o'/'data'/'table.csv').set_index('image_id')
    assert table.loc['x0', 'label'] == 'malignant'

def test_train_then_evaluate_then_predict(tmp_path):
    "`train` trains and does not evaluate; `evaluate` trains nothing; `predict` uses the stored validation threshold."
    out = tmp_path/'run'
    one_line_error(call('evaluate', '--smoke', '--configs', 'baseline', '--out', out),
                   f"{out/'classifier'}: the 'classifier' stage has not run with these options and data (run `melanet train` with the same options first)")
    r = run('train', '--smoke', '--configs', 'baseline', '--out', out)
    assert r.returncode == 0, r.stderr
    assert (out/'classifier'/'predictions.csv').is_file() and not (out/'report.md').exists()
    assert not Path(json.loads((out/'classifier'/'stage.json').read_text())['models']).is_absolute()
    moved = tmp_path/'moved'; shutil.move(out, moved)            # a run folder can move: its paths are relative
    r = run('evaluate', '--smoke', '--configs', 'baseline', '--out', 'moved', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert '== classifier: reused' in r.stdout and '== classifier: running' not in r.stdout, r.stdout
    assert (moved/'report.md').is_file()
    card = json.loads((moved/'classifier'/'work'/'baseline.json').read_text())
    thr = pd.read_csv(moved/'results.csv').set_index('config').loc['baseline', 'threshold@valid_thr']
    assert card['threshold'] == pytest.approx(thr) and card['config'] == 'baseline'
    imgs = pd.read_csv(moved/'data'/'table.csv').query("split == 'test'").path[:2].tolist()
    r = run('predict', '--model', moved/'classifier'/'work'/'baseline.pkl', *imgs, '--csv', tmp_path/'new'/'p.csv', '--gradcam', tmp_path/'cams')
    assert r.returncode == 0, r.stderr
    assert 'pickle' in r.stderr and 'validation split of run' in r.stdout
    scored = pd.read_csv(tmp_path/'new'/'p.csv')
    assert scored.threshold.iloc[0] == pytest.approx(thr) and set(scored.decision) <= {'benign', 'malignant'}
    assert len(list((tmp_path/'cams').glob('*_gradcam.png'))) == 2
    r = call('predict', '--model', moved/'classifier'/'work'/'baseline.pkl', imgs[0], '--threshold', '0.3')
    assert r.returncode == 0 and 'threshold 0.3: given' in r.stdout, r.stderr
    one_line_error(call('predict', '--model', moved/'classifier'/'work'/'baseline.pkl', tmp_path), f'{tmp_path}: is a folder, not an image file')

def test_run_with_a_seed_ensemble_then_predict(tmp_path):
    "--seeds 2: each configuration is a mean of two networks, end to end (report, Grad-CAM stage, predict with Grad-CAM)."
    out = tmp_path/'ens'
    r = call('run', '--smoke', '--configs', 'baseline', '--seeds', '2', '--out', out)
    assert r.returncode == 0, r.stderr
    assert 'a mean of 2 networks per configuration' in (out/'report.md').read_text()
    work = out/'classifier'/'work'
    assert (work/'baseline'/'seed42').is_dir() and (work/'baseline'/'seed43').is_dir()
    assert json.loads((out/'config.json').read_text())['seeds'] == 2
    imgs = pd.read_csv(out/'data'/'table.csv').query("split == 'test'").path[:2].tolist()
    r = call('predict', '--model', work/'baseline.pkl', *imgs, '--csv', tmp_path/'p.csv', '--gradcam', tmp_path/'cams')
    assert r.returncode == 0, r.stderr
    preds = pd.read_csv(out/'classifier'/'predictions.csv').set_index('path')
    scored = pd.read_csv(tmp_path/'p.csv').set_index('path')
    np.testing.assert_allclose(scored.prob_malignant, preds.loc[scored.index, 'prob_malignant'], atol=1e-4)   # the export is the ensemble
    assert len(list((tmp_path/'cams').glob('*_gradcam.png'))) == 2
    hist = pd.read_csv(work/'baseline'/'history.csv')
    assert hist.columns[0] == 'member' and sorted(set(hist.member)) == [0, 1]   # both members' epochs
    import importlib.util                                                        # bench/ensemble_members.py, in process
    spec = importlib.util.spec_from_file_location('ensemble_members', Path(__file__).resolve().parents[1]/'bench'/'ensemble_members.py')
    bench = importlib.util.module_from_spec(spec); spec.loader.exec_module(bench)
    table = pd.read_csv(out/'data'/'table.csv', dtype={'image_id': str})
    each = bench.member_predictions(work/'baseline.pkl', table, 'baseline')
    np.testing.assert_allclose(each['ensemble'].prob_malignant, (each['member 0'].prob_malignant + each['member 1'].prob_malignant) / 2, atol=1e-5)
    assert not np.allclose(each['member 0'].prob_malignant, each['member 1'].prob_malignant, atol=1e-4)   # two different networks
    members = pd.DataFrame(bench.score(each, 'baseline', 42)).set_index(['model', 'split'])
    assert members.index.tolist() == [(m, s) for s in ('valid', 'test') for m in ('ensemble', 'member 0', 'member 1')]
    from sklearn.metrics import roc_auc_score
    test = preds[preds.split == 'test']
    assert members.loc[('ensemble', 'test'), 'auc'] == pytest.approx(roc_auc_score(test.y, test.prob_malignant))
    r = call('run', '--smoke', '--seeds', '0', '--out', tmp_path/'bad')
    assert r.returncode == 2 and 'argument --seeds: must be >= 1, <= 20, got 0' in r.stderr and not (tmp_path/'bad').exists(), r.stderr

@pytest.mark.parametrize('kind', ['empty', 'text', 'truncated', 'state_dict', 'folder'])
def test_predict_with_a_bad_model_file(kind, tmp_path):
    f = tmp_path/'model.pkl'
    if kind == 'empty': f.write_bytes(b'')
    elif kind == 'text': f.write_text('hello\n')
    elif kind == 'truncated':
        import pickle; f.write_bytes(pickle.dumps(list(range(1000)))[:50])
    elif kind == 'state_dict':
        import torch; torch.save({'benign_to_malignant': {'w': torch.zeros(2)}}, f)
    else: f.mkdir()
    img = tmp_path/'x.png'; Image.new('RGB', (8, 8)).save(img)
    r = call('predict', '--model', f, img)
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr
    msg = {'empty': 'empty file, not an exported classifier', 'folder': 'is a folder, not an exported classifier'}.get(kind, 'not an exported melanet classifier')
    assert f'melanet: error: {f}: {msg}' in r.stderr, r.stderr

def test_predict_with_a_diagnosis_model(tmp_path):
    "A 3-diagnosis model: predict gives every class probability, the argmax diagnosis and p(malignant) from the mapping."
    out = tmp_path/'run3'
    r = call('run', '--smoke', '--configs', 'baseline', '--target', 'diagnosis', '--loss', 'weighted_ce', '--out', out)
    assert r.returncode == 0, r.stderr
    imgs = pd.read_csv(out/'data'/'table.csv').query("split == 'test'").path[:3].tolist()
    r = call('predict', '--model', out/'classifier'/'work'/'baseline.pkl', *imgs, '--csv', tmp_path/'p.csv')
    assert r.returncode == 0, r.stderr
    scored = pd.read_csv(tmp_path/'p.csv')
    probs = scored[['prob_nevus', 'prob_melanoma', 'prob_seborrheic_keratosis']]
    assert (probs.sum(1) - 1).abs().max() < 1e-5 and (scored.prob_malignant == scored.prob_melanoma).all()
    assert set(scored.predicted_class) <= {'nevus', 'melanoma', 'seborrheic_keratosis'}
    assert 'predicted_class' in r.stdout

def test_run_with_wgan_config_checks_both_synthetic_sets(tmp_path):
    "Config 'wgan' trains the WGAN-GP beside CycleGAN; both synthetic sets are checked against held-out melanomas and reported."
    import pandas as pd
    out = tmp_path/'w'
    r = call('run', '--smoke', '--configs', 'baseline', 'melanet', 'wgan', '--out', out)
    assert r.returncode == 0, r.stderr
    for stage in ('wgan', 'wgan_synthetic', 'synthetic_checks'): assert (out/stage/'stage.json').is_file()
    checks = pd.read_csv(out/'synthetic_checks.csv')
    assert set(checks.generator) == {'melanet', 'wgan'}
    assert {'kid_vs_heldout_malignant', 'diversity_ratio', 'probe_called_malignant'} <= set(checks.check) and checks.passed.dtype == bool
    assert set(pd.read_csv(out/'results.csv').config) == {'baseline', 'melanet', 'wgan'}
    report = (out/'report.md').read_text()
    assert 'Synthetic sets against held-out real melanomas' in report and '| wgan |' in report
    assert import_json(out/'wgan'/'stage.json')['seconds'] > 0    # each stage's own time is recorded

def import_json(path):
    import json
    return json.loads(path.read_text())
