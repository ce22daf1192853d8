"Tests of melanet_nb.classifier: weights really loaded, losses by hand, K-class heads, export/predict in a fresh process."
import json, os, subprocess, sys, textwrap
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch, torch.nn.functional as F
from PIL import Image

torch.set_num_threads(1)
from melanet_nb import data
from melanet_nb.data import (LABELS, DIAGNOSES, MALIGNANT_DIAGNOSES, PRED_COLUMNS, DataError, add_valid_split, demo_data,
                             draw_lesion, prob_columns, prediction_vocab, read_dataset, read_normalized, write_labels)
from melanet_nb import classifier as clf
from melanet_nb.classifier import (FocalLoss, UniformAlphaFocalLoss, WeightedCrossEntropy, GapClassifier, TimmBody,
                                   WeightMappingError, LOSSES, SELECT_METRIC, class_weights, make_loss, create_classifier,
                                   gap_splitter, map_state_dict_by_position, effnet_lite0_weights_file, augment_offline,
                                   read_augmented, training_table, melanet_learner, run_experiments, predict, predict_proba,
                                   load_classifier)

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

def test_binary_focal_loss_is_the_paper_formula_on_random_logits():
    "The N-class FocalLoss with the binary float alpha gives exactly the pre-N-class formula of eq. (6)."
    torch.manual_seed(2)
    lg, y = torch.randn(500, 2) * 4, torch.randint(0, 2, (500,))
    for alpha, gamma in [(0.25, 2.), (0.6, 0.5), (0., 3.)]:
        logp_t = F.log_softmax(lg, -1).gather(-1, y.view(-1, 1)).squeeze(-1)
        paper = -torch.where(y == 1, alpha, 1 - alpha) * (1 - logp_t.exp()) ** gamma * logp_t
        torch.testing.assert_close(FocalLoss(alpha, gamma, reduction='none')(lg, y), paper, atol=1e-6, rtol=0)
        torch.testing.assert_close(FocalLoss([1 - alpha, alpha], gamma, reduction='none')(lg, y), paper, atol=1e-6, rtol=0)

def test_focal_loss_alpha_vector():
    lg = torch.tensor([[0., np.log(3), 0.]] * 3, dtype=torch.float32)   # probabilities 0.2, 0.6, 0.2
    y = torch.tensor([0, 1, 2])
    alpha = [0.2, 0.3, 0.5]
    pt = np.array([0.2, 0.6, 0.2])
    expected = -np.array(alpha) * (1 - pt) ** 2 * np.log(pt)
    np.testing.assert_allclose(FocalLoss(alpha, reduction='none')(lg, y).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(FocalLoss(torch.tensor(alpha))(lg, y).item(), expected.mean(), rtol=1e-5)
    np.testing.assert_allclose(FocalLoss(None, reduction='none')(lg, y).numpy(), expected / alpha, rtol=1e-5)
    with pytest.raises(ValueError, match='only fits 2 classes, but the logits have 3'): FocalLoss(0.25)(lg, y)
    with pytest.raises(ValueError, match='2 per-class weights, but the logits have 3'): FocalLoss([0.5, 0.5])(lg, y)
    with pytest.raises(ValueError, match='finite and >= 0'): FocalLoss([0.5, -1., 0.5])

def test_weighted_cross_entropy_by_hand():
    lg = torch.tensor([[0., np.log(3), 0.]] * 3, dtype=torch.float32)
    y = torch.tensor([0, 1, 2])
    w = [0.5, 2., 4.]
    expected = [-0.5 * np.log(0.2), -2 * np.log(0.6), -4 * np.log(0.2)]   # 0.8047190, 1.0216512, 6.4377516
    np.testing.assert_allclose(WeightedCrossEntropy(w, reduction='none')(lg, y).numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(WeightedCrossEntropy(w)(lg, y).item(), np.mean(expected), rtol=1e-6)    # mean, not sum/Σw
    np.testing.assert_allclose(WeightedCrossEntropy(w, reduction='sum')(lg, y).item(), np.sum(expected), rtol=1e-6)
    torch.testing.assert_close(WeightedCrossEntropy()(lg, y), F.cross_entropy(lg, y))
    assert torch.equal(WeightedCrossEntropy(w).activation(lg), F.softmax(lg, -1))
    assert WeightedCrossEntropy(w).decodes(lg).tolist() == [1, 1, 1]

def test_class_weights_are_the_thesis_weights():
    targets = ['nevus'] * 1372 + ['melanoma'] * 374 + ['seborrheic_keratosis'] * 254   # ISIC-2017 training set
    w = class_weights(targets, DIAGNOSES)
    np.testing.assert_allclose(w.numpy(), [2000 / (3 * 1372), 2000 / (3 * 374), 2000 / (3 * 254)], rtol=1e-6)
    np.testing.assert_allclose(w.numpy(), [0.486, 1.783, 2.625], atol=1e-3)   # as printed in the thesis
    assert class_weights(['benign', 'malignant', 'benign', 'benign'], LABELS).tolist() == pytest.approx([4 / 6, 2.])
    with pytest.raises(DataError, match=r"no training image of class\(es\) \['melanoma'\]"):
        class_weights(['nevus', 'seborrheic_keratosis'], DIAGNOSES)
    with pytest.raises(DataError, match='not in the vocab'): class_weights(['nevus', 'lentigo'], ['nevus'])

def test_make_loss():
    assert LOSSES == ('focal', 'focal_keras', 'weighted_ce', 'ce')
    binary, multi = make_loss('focal', vocab=LABELS), make_loss('focal', vocab=DIAGNOSES)
    assert isinstance(binary, FocalLoss) and binary.alpha == 0.25 and binary.gamma == 2
    assert isinstance(multi, FocalLoss) and multi.alpha is None
    assert make_loss().alpha == 0.25                                   # default vocab: binary
    assert isinstance(make_loss('focal_keras'), UniformAlphaFocalLoss)
    assert make_loss('ce').weight is None
    wce = make_loss('weighted_ce', ['nevus', 'nevus', 'melanoma', 'seborrheic_keratosis'], DIAGNOSES)
    assert wce.weight == pytest.approx((4 / 6, 4 / 3, 4 / 3))
    with pytest.raises(ValueError, match='needs `targets`'): make_loss('weighted_ce', vocab=DIAGNOSES)
    with pytest.raises(ValueError, match="unknown loss 'dice'"): make_loss('dice')
    own = FocalLoss(gamma=0.)
    assert make_loss(own) is own

def test_learner_has_one_output_per_class_and_k_class_metrics():
    from fastai.vision.all import DataLoaders, TensorCategory
    from torch.utils.data import TensorDataset
    for vocab, metrics in [(LABELS, [SELECT_METRIC, 'recall_score']), (DIAGNOSES, [SELECT_METRIC, 'balanced_accuracy_score'])]:
        x, y = torch.randn(6, 3, 32, 32), TensorCategory(torch.arange(6) % len(vocab))
        dls = DataLoaders.from_dsets(TensorDataset(x, y), TensorDataset(x, y), bs=3); dls.vocab = vocab
        learn = melanet_learner(dls, pretrained=False)
        assert learn.model.head.out_features == len(vocab)
        assert [m.name for m in learn.metrics] == metrics
    assert learn.loss_func.alpha is None   # the K-class default focal loss has no alpha

def test_removed_names_are_gone():
    for name in ['youden_threshold', 'summarize', 'isic_experiment']: assert not hasattr(clf, name), name
    assert clf.CONFIGS is data.CONFIGS and clf.PRED_COLUMNS is data.PRED_COLUMNS   # one definition, in data
    assert not {'CONFIGS', 'PRED_COLUMNS'} & set(clf.__all__)


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
    wgan = pd.DataFrame(dict(image_id=[f'W_{i}' for i in range(3)], path=[str(syn/'images'/f'SYN_{i}.png') for i in range(3)],
                             label='malignant', split='train', source='synthetic'))   # a stand-in WGAN-GP set, as a table
    preds = run_experiments(small_table, synthetic={'melanet': syn, 'wgan': wgan}, configs=['baseline', 'augment5x', 'melanet', 'wgan'],
                            work_dir=work/'runs', size=32, bs=8, epochs=1, freeze_epochs=0, lr=1e-3, seed=0)
    return preds, work

def test_run_experiments_predictions_table(trained, small_table):
    preds, _ = trained
    assert list(preds.columns[:len(PRED_COLUMNS) + 2]) == PRED_COLUMNS + prob_columns(LABELS)
    assert {'path', 'label'} <= set(preds.columns) and preds.attrs['vocab'] == LABELS and preds.attrs['loss'] == clf._defaults(clf.train_classifier)['loss'] == 'ce'
    assert (preds.true_class == preds.label).all() and np.allclose(preds.prob_benign + preds.prob_malignant, 1, atol=1e-5)
    n_eval = small_table.split.isin(['valid', 'test']).sum()
    assert preds.groupby('config').size().to_dict() == {'baseline': n_eval, 'augment5x': n_eval, 'melanet': n_eval, 'wgan': n_eval}
    for c in ['augment5x', 'melanet', 'wgan']:   # every configuration is evaluated on the same original images
        assert preds[preds.config == c].image_id.tolist() == preds[preds.config == 'baseline'].image_id.tolist()
    assert set(preds.split) == {'valid', 'test'} and preds.prob_malignant.between(0, 1).all()
    assert (preds.y == (preds.label == 'malignant')).all()
    log = {r['config']: r['n_train'] for r in preds.attrs['log']}
    assert log['melanet'] == log['baseline'] + 6 and log['augment5x'] == 6 * log['baseline']
    assert log['wgan'] == log['baseline'] + 3   # each synthetic config adds its own set

def test_run_experiments_synthetic_sets_per_config(small_table):
    "A single set is CycleGAN's; a config asked without its set fails by name before anything trains."
    syn = pd.DataFrame(dict(image_id=['s0'], path='', label='malignant', split='train', source='synthetic'))
    assert clf.synthetic_sets(syn) == {'melanet': syn} and clf.synthetic_sets(None) == {}
    with pytest.raises(ValueError, match=r"config 'wgan' needs `synthetic` \(class-conditional WGAN-GP output.*synthetic=\{'wgan': ...\}"):
        run_experiments(small_table, synthetic=syn, configs=['baseline', 'wgan'], size=32, epochs=1)
    with pytest.raises(ValueError, match="config 'melanet' needs `synthetic`"):
        run_experiments(small_table, synthetic={'wgan': syn}, configs=['melanet'], size=32, epochs=1)
    with pytest.raises(ValueError, match=r"synthetic sets given for \['cyclegan'\]"):
        run_experiments(small_table, synthetic={'cyclegan': syn}, size=32, epochs=1)
    assert data.CONFIGS[-1] == 'wgan' and set(data.SYNTHETIC_CONFIGS) == {'melanet', 'wgan'}

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

def test_each_training_keeps_its_history_and_predicts_with_its_tta(trained):
    "train_classifier writes history.csv (one header) in its folder; the export predicts with the TTA of its training."
    preds, work = trained
    for config in ['baseline', 'wgan']:
        text = (work/'runs'/config/'history.csv').read_text()
        assert text.count('train_loss') == 1 and text.splitlines()[0].startswith('epoch,train_loss,valid_loss')
        assert len(pd.read_csv(work/'runs'/config/'history.csv')) == 1   # epochs=1, freeze_epochs=0: one phase, one row
    pkl = work/'runs'/'baseline.pkl'
    learn = load_classifier(pkl)
    assert learn.predict_tta == clf._defaults(clf.train_classifier)['tta'] == 'flips'
    assert not any(isinstance(cb, clf.HistoryCSV) for cb in learn.cbs)   # the logger is not exported
    rows = preds[preds.config == 'baseline'].head(6)
    np.testing.assert_allclose(predict_proba(pkl, rows.path), rows[prob_columns(LABELS)].to_numpy(), atol=1e-4)   # valid/test got the same TTA
    assert not np.allclose(predict_proba(pkl, rows.path, tta='none'), rows[prob_columns(LABELS)].to_numpy(), atol=1e-4)
    assert preds.attrs['recipe']['tta'] == 'flips' and preds.attrs['recipe']['augment'] == 'flips'

def test_history_has_a_phase_column_with_a_head_only_phase(small_table, tmp_path):
    tbl = small_table[small_table.split != 'test']
    clf.train_classifier(tbl, tmp_path/'run', size=32, bs=8, epochs=1, freeze_epochs=1, seed=0)
    hist = pd.read_csv(tmp_path/'run'/'history.csv')
    assert hist.columns[:2].tolist() == ['phase', 'epoch'] and hist[['phase', 'epoch']].values.tolist() == [[0, 0], [1, 0]]
    assert (tmp_path/'run'/'history.csv').read_text().count('train_loss') == 1

def test_scratch_cnn_trains_with_every_strategy_plumbing(small_table, tmp_path):
    "The from-scratch CNN: its layer groups work with the default strategy and with 'discriminative' freezing."
    tbl = small_table[small_table.split != 'test']
    with pytest.warns(UserWarning, match="pretrained=True is ignored"):
        learn = clf.train_classifier(tbl, tmp_path/'s', arch='scratch_cnn', size=32, bs=8, epochs=1, seed=0)
    assert learn.model.weights == 'random' and len(learn.opt.param_lists) == 5
    learn2 = clf.train_classifier(tbl, tmp_path/'d', arch='scratch_cnn', pretrained=False, size=32, bs=8, epochs=1,
                                  freeze_epochs=1, strategy='discriminative', seed=0)
    assert np.isfinite(learn2.recorder.values[-1][0])

def test_shades_of_gray_travels_with_the_export(small_table, tmp_path):
    "colour_constancy is part of the exported pipeline: predict applies it to new images."
    tbl = small_table[small_table.split != 'test']
    learn = clf.train_classifier(tbl, tmp_path/'sog', size=32, bs=8, epochs=1, colour_constancy=6, seed=0)
    pkl = clf.export_classifier(learn, tmp_path/'sog.pkl')
    reader = [f for f in load_classifier(pkl).dls.valid_ds.tls[0].tfms.fs if isinstance(f, data.ReadImage)][0]
    assert reader.colour_constancy == 6
    path = small_table.path.iloc[0]
    assert np.array_equal(np.asarray(reader(path)), np.asarray(data.shades_of_gray(data.prepare_image(path, 32, geometry=reader.geometry), 6)))

def test_geometry_travels_with_the_export(small_table, tmp_path):
    "geometry='squash' is part of the exported pipeline: a wide image is squashed, not padded, at predict time."
    tbl = small_table[small_table.split != 'test']
    learn = clf.train_classifier(tbl, tmp_path/'sq', size=32, bs=8, epochs=1, geometry='squash', seed=0)
    loaded = load_classifier(clf.export_classifier(learn, tmp_path/'sq.pkl'))
    assert data.input_geometry(loaded) == 'squash'
    reader = [f for f in loaded.dls.valid_ds.tls[0].tfms.fs if isinstance(f, data.ReadImage)][0]
    wide = tmp_path/'wide.png'; data.load_image(small_table.path.iloc[0]).resize((96, 48)).save(wide)
    squashed, padded = (np.asarray(data.prepare_image(wide, 32, geometry=g)) for g in ('squash', 'pad'))
    assert np.array_equal(np.asarray(reader(wide)), squashed) and not np.array_equal(squashed, padded)

def test_seeds_below_one_are_refused(small_table, tmp_path):
    "The training of a seed ensemble is tested end to end in tests/test_cli.py (`melanet run --seeds 2`)."
    with pytest.raises(ValueError, match='seeds must be at least 1'): clf.train_classifier(small_table, tmp_path/'x', seeds=0)

def test_predict_rejects_bad_images_in_process(trained, tmp_path):
    _, work = trained
    bad = tmp_path/'empty.png'; bad.write_bytes(b'')
    with pytest.raises(DataError, match='empty.png: cannot decode image'): predict(work/'runs'/'baseline.pkl', [bad])


# --- three classes: the diagnosis target ------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def diagnosis_table():
    "A few demo images per diagnosis and split (the demo data has nevi, melanomas and seborrheic keratoses)."
    tbl = add_valid_split(read_dataset(demo_data()), seed=0)
    n = {'train': 6, 'valid': 3, 'test': 3}   # per diagnosis
    return pd.concat([g.groupby('diagnosis').head(n[s]) for s, g in tbl.groupby('split')], ignore_index=True)

@pytest.fixture(scope='module')
def trained3(diagnosis_table, tmp_path_factory):
    "Baseline and melanet (synthetic malignant lesions without a diagnosis), 3 classes, weighted CE, one epoch at 32 px."
    work = tmp_path_factory.mktemp('exp3')
    syn = work/'synthetic'; (syn/'images').mkdir(parents=True)
    for i in range(4): draw_lesion(True, 48, seed=700 + i)[0].save(syn/'images'/f'SYN_{i}.png')
    write_labels(syn, pd.DataFrame(dict(image_id=[f'SYN_{i}' for i in range(4)], label='malignant', split='train')))
    preds = run_experiments(diagnosis_table, synthetic=syn, configs=['baseline', 'melanet'], work_dir=work/'runs', target='diagnosis',
                            loss='weighted_ce', size=32, bs=8, epochs=1, freeze_epochs=0, lr=1e-3, seed=0)
    return preds, work

def test_three_class_predictions_table(trained3, diagnosis_table):
    preds, _ = trained3
    vocab = preds.attrs['vocab']
    assert vocab == DIAGNOSES and prediction_vocab(preds) == vocab   # class_vocab's order, not sorted
    assert (preds.attrs['target'], preds.attrs['loss']) == ('diagnosis', 'weighted_ce')
    assert list(preds.columns[:len(PRED_COLUMNS) + 3]) == PRED_COLUMNS + prob_columns(vocab)
    probs = preds[prob_columns(vocab)].to_numpy()
    assert probs.shape[1] == 3 and np.allclose(probs.sum(1), 1, atol=1e-5) and ((probs >= 0) & (probs <= 1)).all()
    assert (preds.y == [vocab.index(c) for c in preds.true_class]).all()
    eval_rows = diagnosis_table[diagnosis_table.split.isin(['valid', 'test'])]
    for config, g in preds.groupby('config'):   # every configuration predicts the same original rows, true class = diagnosis
        assert g.image_id.tolist() == eval_rows.image_id.tolist() and g.true_class.tolist() == eval_rows.diagnosis.tolist()
    assert (preds.label == eval_rows.label.tolist() * 2).all()   # the binary label rides along
    log = {r['config']: r['n_train'] for r in preds.attrs['log']}
    assert log['melanet'] == log['baseline'] + 4

def test_synthetic_and_augmented_rows_carry_a_diagnosis(diagnosis_table, tmp_path):
    syn = pd.DataFrame(dict(image_id=['s0', 's1'], path='', label='malignant', split='train', source='synthetic'))
    t = training_table(diagnosis_table, 'melanet', tmp_path, synthetic=syn)
    assert t[t.source == 'synthetic'].diagnosis.tolist() == [MALIGNANT_DIAGNOSES[0]] * 2 == ['melanoma'] * 2
    aug = training_table(diagnosis_table, 'augment5x', tmp_path, size=32)
    train = diagnosis_table[diagnosis_table.split == 'train']
    assert (aug.split == 'train').sum() == 6 * len(train)
    parent = aug.image_id.str.replace(r'_aug\d+$', '', regex=True).map(diagnosis_table.set_index('image_id').diagnosis)
    assert aug.diagnosis.notna().all() and (aug.diagnosis == parent).all()
    assert read_augmented(tmp_path/'augment5x_s32_seed42').diagnosis.notna().all()

def test_predict_from_a_diagnosis_model(trained3):
    "`predict` of a diagnosis model is p(melanoma); `predict_proba` gives the table's columns; the export keeps its vocab."
    preds, work = trained3
    pkl = work/'runs'/'melanet.pkl'
    rows = preds[preds.config == 'melanet'].head(6)
    vocab = list(load_classifier(pkl).dls.vocab)
    assert vocab == preds.attrs['vocab']
    np.testing.assert_allclose(predict_proba(pkl, rows.path), rows[prob_columns(vocab)].to_numpy(), atol=1e-4)
    np.testing.assert_allclose(predict(pkl, rows.path), rows[prob_columns(MALIGNANT_DIAGNOSES)].sum(axis=1).to_numpy(), atol=1e-4)
    assert predict_proba(pkl, []).shape == (0, 3) and predict(pkl, []).shape == (0,)

def test_diagnosis_target_needs_every_class_in_valid(diagnosis_table):
    no_sk = diagnosis_table[~((diagnosis_table.split == 'valid') & (diagnosis_table.diagnosis == 'seborrheic_keratosis'))]
    with pytest.raises(DataError, match=r"'valid' split has no image of class\(es\) \['seborrheic_keratosis'\]"):
        run_experiments(no_sk, configs=['baseline'], target='diagnosis', size=32, epochs=1, freeze_epochs=0)


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
