"Tests of melanet_nb.classifier: weights really loaded, focal loss by hand, layer groups, export/predict in a fresh process."
import json, os, subprocess, sys, textwrap
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch, torch.nn.functional as F
from PIL import Image

torch.set_num_threads(1)
from melanet_nb.data import LABELS, DataError, add_valid_split, demo_data, draw_lesion, read_dataset, read_normalized, write_labels
from melanet_nb import classifier as clf
from melanet_nb.classifier import (FocalLoss, UniformAlphaFocalLoss, GapClassifier, TimmBody, WeightMappingError,
                                   create_classifier, gap_splitter, map_state_dict_by_position, effnet_lite0_weights_file,
                                   augment_offline, run_experiments, predict, summarize, PRED_COLUMNS)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent/'shared'/'data'


# --- pretrained weights --------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def packaged(): return torch.load(effnet_lite0_weights_file(), map_location='cpu', weights_only=True)

def test_default_backbone_carries_the_packaged_imagenet_weights(packaged):
    m = create_classifier()
    assert isinstance(m.body, TimmBody) and m.head.in_features == 1280 and m.head.out_features == 2
    body_sd = m.body.model.state_dict()
    src = [v for k, v in packaged.items() if not k.startswith('_fc.')]   # the 1000-class classifier is dropped
    assert len(src) == len(body_sd) == 294
    for a, (k, b) in zip(src, body_sd.items()): assert torch.equal(a, b), k
    # and not what a random initialisation gives
    rand = create_classifier(pretrained=False).body.model.state_dict()
    assert not torch.equal(rand['conv_stem.weight'], body_sd['conv_stem.weight'])
    assert not torch.allclose(body_sd['bn2.running_var'], torch.ones_like(body_sd['bn2.running_var']))  # trained BN stats

def test_pretrained_features_behave_like_imagenet_features():
    "ImageNet filters respond to image structure: a smooth image and noise give far more different GAP features than with random weights."
    torch.manual_seed(0)
    smooth = F.interpolate(torch.rand(1, 3, 4, 4), size=64, mode='bilinear')
    noise = torch.rand(1, 3, 64, 64)
    def cos(m):
        m.eval()
        with torch.no_grad(): a, b = m.features(smooth), m.features(noise)
        return F.cosine_similarity(a, b).item()
    assert cos(create_classifier()) < cos(create_classifier(pretrained=False))

def test_positional_mapping_fails_loudly(packaged):
    m = create_classifier(pretrained=False)
    full = clf.timm.create_model('tf_efficientnet_lite0', pretrained=False).state_dict()
    wrong = dict(packaged); wrong['_bn0.weight'] = torch.zeros(5)
    with pytest.raises(WeightMappingError, match=r"entry 1 '_bn0.weight' has shape \(5,\)"):
        map_state_dict_by_position(wrong, full, 'pkg')
    with pytest.raises(WeightMappingError, match='295 tensors, but the model expects 296'):
        map_state_dict_by_position(dict(list(packaged.items())[:-1]), full, 'pkg')

def test_vgg16_from_local_file_via_env(tmp_path, monkeypatch):
    feats = clf.vgg16_features()
    torch.nn.init.normal_(feats[0].weight)
    f = tmp_path/'vgg16.pth'
    torch.save({f'features.{k}': v for k, v in feats.state_dict().items()} | {'classifier.0.weight': torch.zeros(1)}, f)
    monkeypatch.setenv(clf.VGG16_WEIGHTS_ENV, str(f))
    m = create_classifier('vgg16')
    assert torch.equal(m.body[0][0].weight, feats[0].weight) and torch.equal(m.body[4][4].bias, feats[28].bias)
    # Fig. 2: 13 conv layers in 5 blocks, GAP, one dense layer with 2 units
    assert [sum(isinstance(l, torch.nn.Conv2d) for l in b) for b in m.body] == [2, 2, 3, 3, 3]
    assert m.head.in_features == 512 and m.head.out_features == 2 and m(torch.zeros(1, 3, 64, 64)).shape == (1, 2)
    assert len(gap_splitter(m)) == 6

def test_vgg16_offline_errors(tmp_path, monkeypatch):
    monkeypatch.delenv(clf.VGG16_WEIGHTS_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match='nothere.pth: VGG-16 weights file not found'):
        create_classifier('vgg16', weights_path=tmp_path/'nothere.pth')
    def no_network(*a, **k): raise OSError('Name or service not known')
    monkeypatch.setattr(clf.timm, 'create_model', no_network)
    with pytest.raises(RuntimeError, match=r'could not download VGG-16.*MELANET_VGG16_WEIGHTS'):
        create_classifier('vgg16')
    torch.save({'features.0.weight': torch.zeros(64, 3, 3, 3)}, tmp_path/'partial.pth')
    with pytest.raises(WeightMappingError, match='missing 25 VGG-16 tensor'):
        create_classifier('vgg16', weights_path=tmp_path/'partial.pth')


# --- focal loss ----------------------------------------------------------------------------------------------------
def test_focal_loss_by_hand():
    logits, y = torch.tensor([[0., np.log(3)], [0., np.log(3)], [2., 0.]]), torch.tensor([1, 0, 0])
    # p(malignant) = 0.75, 0.75, 1/(1+e^2)
    p3 = 1 / (1 + np.exp(2)); pt = np.array([0.75, 0.25, 1 - p3]); at = np.array([0.25, 0.75, 0.75])
    expected = -at * (1 - pt) ** 2 * np.log(pt)
    np.testing.assert_allclose(FocalLoss(reduction='none')(logits, y).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(expected[:2], [0.0044951, 0.5848429], atol=1e-6)
    np.testing.assert_allclose(FocalLoss()(logits, y).item(), expected.mean(), rtol=1e-5)
    np.testing.assert_allclose(UniformAlphaFocalLoss(reduction='none')(logits, y).numpy(), -0.25 * (1 - pt) ** 2 * np.log(pt), rtol=1e-5)

def test_focal_loss_gamma0_is_alpha_weighted_ce():
    torch.manual_seed(1)
    lg, y = torch.randn(50, 2), torch.randint(0, 2, (50,))
    w = torch.where(y == 1, 0.3, 0.7)
    torch.testing.assert_close(FocalLoss(alpha=0.3, gamma=0.)(lg, y), (F.cross_entropy(lg, y, reduction='none') * w).mean())
    # the Keras variant's alpha only scales the loss
    torch.testing.assert_close(UniformAlphaFocalLoss(alpha=0.25)(lg, y), 0.25 * UniformAlphaFocalLoss(alpha=1.)(lg, y))


# --- data-backed pieces --------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def small_table():
    "60 demo images (train/valid/test), stratified."
    tbl = add_valid_split(read_dataset(demo_data()), seed=0)
    n = {'train': 15, 'valid': 5, 'test': 5}   # per class
    parts = [g.groupby('label').head(n[s]) for s, g in tbl.groupby('split')]
    return pd.concat(parts, ignore_index=True)

def test_augment_offline_writes_originals_plus_copies(small_table, tmp_path):
    dest = augment_offline(small_table, tmp_path/'aug', factor=2, size=48, seed=3, progress=False)
    tbl, prov = read_normalized(dest), pd.read_csv(dest/'provenance.csv')
    n_train = (small_table.split == 'train').sum()
    assert len(tbl) == 3 * n_train and set(tbl.split) == {'train'}
    assert set(prov.parent_id) == set(small_table[small_table.split == 'train'].image_id)
    assert (prov.groupby('parent_id').copy.apply(sorted).map(tuple) == (0, 1, 2)).all()
    assert json.loads((dest/'augment.json').read_text())['factor'] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]   # no temp folder left behind
    assert Image.open(tbl.path[0]).size == (48, 48)

@pytest.fixture(scope='module')
def trained(small_table, tmp_path_factory):
    "Three configurations, one short epoch at 32 px: baseline, augment5x and melanet (with a stand-in synthetic folder)."
    work = tmp_path_factory.mktemp('exp')
    syn = work/'synthetic'; (syn/'images').mkdir(parents=True)
    for i in range(6): draw_lesion(True, 48, seed=900 + i)[0].save(syn/'images'/f'SYN_{i}.png')
    write_labels(syn, pd.DataFrame(dict(image_id=[f'SYN_{i}' for i in range(6)], label='malignant', split='train')))
    preds = run_experiments(small_table, synthetic=syn, configs=['baseline', 'augment5x', 'melanet'], work_dir=work/'runs',
                            size=32, bs=8, epochs=1, freeze_epochs=0, lr=1e-3, seed=0)
    return preds, work

def test_run_experiments_predictions_table(trained, small_table):
    preds, _ = trained
    assert list(preds.columns) == PRED_COLUMNS
    n_eval = small_table.split.isin(['valid', 'test']).sum()
    assert preds.groupby('config').size().to_dict() == {'baseline': n_eval, 'augment5x': n_eval, 'melanet': n_eval}
    for c in ['augment5x', 'melanet']:   # every configuration is evaluated on the same original images
        assert preds[preds.config == c].image_id.tolist() == preds[preds.config == 'baseline'].image_id.tolist()
    assert set(preds.split) == {'valid', 'test'} and preds.prob_malignant.between(0, 1).all()
    assert (preds.y == (preds.label == 'malignant')).all()
    log = {r['config']: r['n_train'] for r in preds.attrs['log']}
    assert log['melanet'] == log['baseline'] + 6 and log['augment5x'] == 6 * log['baseline']
    s = summarize(preds, 'valid')
    assert {'auc', 'sensitivity', 'npv'} <= set(s.columns)

def test_predict_from_a_fresh_process(trained):
    "One new interpreter: load the export, predict good images (same numbers), then fail by name on bad ones."
    preds, work = trained
    pkl = work/'runs'/'baseline.pkl'
    rows = preds[preds.config == 'baseline'].head(5)
    bad = work/'broken.jpg'; bad.write_bytes(b'\xff\xd8\xff not really a jpeg')
    code = textwrap.dedent(f"""
        import json, sys
        from melanet_nb.classifier import predict
        print(json.dumps(predict({str(pkl)!r}, json.loads(sys.argv[1])).tolist()), flush=True)
        predict({str(pkl)!r}, json.loads(sys.argv[2]))""")
    r = subprocess.run([sys.executable, '-c', code, json.dumps(rows.path.tolist()),
                        json.dumps([rows.path.iloc[0], str(bad), str(work/'missing.png')])],
                       capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS='1'), cwd='/')
    assert r.stdout.strip(), r.stderr[-2000:]
    np.testing.assert_allclose(json.loads(r.stdout.strip().splitlines()[-1]), rows.prob_malignant.values, atol=1e-4)
    assert r.returncode != 0
    assert 'DataError: 2 unreadable image(s)' in r.stderr and 'broken.jpg: cannot decode image' in r.stderr
    assert 'missing.png: image file not found' in r.stderr

def test_predict_rejects_bad_images_in_process(trained, tmp_path):
    _, work = trained
    bad = tmp_path/'empty.png'; bad.write_bytes(b'')
    with pytest.raises(DataError, match='empty.png: cannot decode image'): predict(work/'runs'/'baseline.pkl', [bad])


# --- committed real-data results are consistent with their predictions ----------------------------------------------
RESULTS = REPO/'results'/'classifier'

@pytest.mark.skipif(not (RESULTS/'metrics.json').is_file(), reason='no committed classifier results')
def test_committed_results_match_committed_predictions():
    from sklearn.metrics import roc_auc_score
    meta = json.loads((RESULTS/'metrics.json').read_text())
    preds = pd.read_csv(RESULTS/'predictions.csv', dtype={'image_id': str})
    for m in meta['metrics']:
        g = preds[(preds.config == m['config']) & (preds.split == m['split'])]
        assert len(g) == m['n']
        assert abs(roc_auc_score(g.y, g.prob_malignant) - m['auc']) < 1e-9
        pos = g.prob_malignant >= m['threshold'] - 1e-7   # the CSV stores float32 probabilities in their short form
        assert int((pos & (g.y == 1)).sum()) == m['tp'] and int((~pos & (g.y == 1)).sum()) == m['fn']
    assert set(preds[preds.split == 'test'].image_id).isdisjoint(
        set(pd.read_csv(SHARED/'isic2016'/'labels.csv').image_id) if SHARED.exists() else set())


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED/'isic2016').is_dir(), reason='real data not available')
def test_real_test_set_is_deduplicated_against_training():
    from melanet_nb.data import exclude_seen
    train = read_dataset(SHARED/'isic2016')
    test, n_seen = exclude_seen(read_dataset(SHARED/'isic2017_256').query("split == 'test'"), train)
    assert n_seen == 3 and len(test) == 147 and not test.image_id.isin(train.image_id).any()
