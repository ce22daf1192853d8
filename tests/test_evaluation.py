"""Unit tests of melanet_nb.evaluation: every metric against scikit-learn, DeLong against its O(n^2) definition, Grad-CAM
against the closed-form CAM of a GAP + linear head, the predictions-table contract (binary and K classes), calibration,
Grad-CAM mass inside lesion masks, and the synthesis-quality measures (KID, probe)."""
import inspect, math
import numpy as np, pandas as pd, pytest, torch, torch.nn as nn, torch.nn.functional as F
from sklearn import metrics as skm
import melanet_nb.evaluation as ev
from melanet_nb.evaluation import *

def scores(n=300, seed=0, ties=False, sep=0.25):
    r = np.random.default_rng(seed)
    y = r.integers(0, 2, n)
    p = np.clip(r.normal(0.4 + sep * y, 0.2), 0, 1)
    return y, (np.round(p, 2) if ties else p)

# --- inputs ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('y, p, msg', [
    ([0, 1, 1], [.2, .3], 'length mismatch: 3 labels but 2 probabilities'),
    ([0, 1], [.2, np.nan], '1 probabilities are NaN'),
    ([1, 1, 1], [.2, .3, .9], 'only one class present (all malignant)'),
    ([0, 1], [-.1, .3], 'must lie in [0, 1]'),
    ([0, 3], [.1, .3], 'labels must be 0/1'),
    ([], [], 'no predictions'),
])
def test_bad_inputs_are_refused(y, p, msg):
    with pytest.raises(MetricInputError, match=None) as e: roc_auc(y, p)
    assert msg in str(e.value)

# --- threshold metrics ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize('threshold', [0.1, 0.35, 0.5, 0.62, 0.9])
@pytest.mark.parametrize('ties', [False, True])
def test_threshold_metrics_match_sklearn(threshold, ties):
    y, p = scores(seed=int(threshold * 100), ties=ties)
    m = threshold_metrics(y, p, threshold)
    pred = (p >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    assert (m['tp'], m['fp'], m['tn'], m['fn']) == (tp, fp, tn, fn)
    assert m['sensitivity'] == pytest.approx(skm.recall_score(y, pred))
    assert m['specificity'] == pytest.approx(skm.recall_score(y, pred, pos_label=0))
    assert m['ppv'] == pytest.approx(skm.precision_score(y, pred, zero_division=np.nan), nan_ok=True)
    assert m['npv'] == pytest.approx(skm.precision_score(y, pred, pos_label=0, zero_division=np.nan), nan_ok=True)
    assert m['f1'] == pytest.approx(skm.f1_score(y, pred))
    assert m['balanced_accuracy'] == pytest.approx(skm.balanced_accuracy_score(y, pred))

def test_npv_is_not_sensitivity():
    "The original MelaNet code's 'sensitivity' TN/(TN+FN) is the NPV; ours is TP/(TP+FN)."
    y = np.array([1] * 10 + [0] * 40); p = np.r_[np.full(7, .9), np.full(3, .1), np.full(38, .1), np.full(2, .9)]
    m = threshold_metrics(y, p)
    assert m['sensitivity'] == pytest.approx(7 / 10)
    assert m['npv'] == pytest.approx(38 / (38 + 3))

def test_undefined_ratio_is_nan():
    m = threshold_metrics([0, 1, 0], [.1, .2, .3], threshold=0.99)   # nothing called malignant
    assert math.isnan(m['ppv']) and m['sensitivity'] == 0 and m['fn'] == 1

# --- AUC and its interval -------------------------------------------------------------------------------------------
@pytest.mark.parametrize('ties', [False, True])
def test_auc_matches_sklearn(ties):
    y, p = scores(ties=ties)
    assert roc_auc(y, p) == pytest.approx(skm.roc_auc_score(y, p))

def test_bootstrap_ci_reproducible_and_sane():
    y, p = scores(n=400, ties=True)
    a, b = auc_ci(y, p, n_boot=1000, seed=3), auc_ci(y, p, n_boot=1000, seed=3)
    assert a == b
    assert a['auc_ci_low'] < a['auc'] < a['auc_ci_high']
    assert auc_ci(y, p, n_boot=1000, seed=4) != a
    boots = bootstrap_aucs(y, p, n_boot=1200, seed=0)
    assert boots.shape == (1200,)                                  # several chunks of the vectorised loop
    assert np.std(boots) == pytest.approx(delong_auc_se(y, p), rel=0.15)

def test_bootstrap_matches_sklearn_on_one_resample():
    "The vectorised rank AUC of each resample equals sklearn's AUC on the same resampled rows."
    y, p = scores(n=120, ties=True)
    idx = next(ev._stratified_resamples(y, 5, seed=1))
    n_pos = int(y.sum())
    vec = ev._auc_rows(p[idx], n_pos)
    for row, auc in zip(idx, vec): assert auc == pytest.approx(skm.roc_auc_score(y[row], p[row]))

# --- threshold chosen on validation data ----------------------------------------------------------------------------
@pytest.mark.parametrize('target', [0.5, 0.8, 0.9, 0.95, 1.0])
def test_threshold_for_sensitivity_matches_roc_curve(target):
    y, p = scores(ties=True)
    thr = threshold_for_sensitivity(y, p, target)
    fpr, tpr, thresholds = skm.roc_curve(y, p, drop_intermediate=False)
    assert thr == pytest.approx(thresholds[np.argmax(tpr >= target - 1e-12)])
    assert threshold_metrics(y, p, thr)['sensitivity'] >= target
    assert threshold_metrics(y, p, np.nextafter(thr, 2))['sensitivity'] < target   # the highest such threshold

def test_threshold_target_checked():
    with pytest.raises(MetricInputError, match='target sensitivity'): threshold_for_sensitivity([0, 1], [.1, .9], 0)

# --- paired comparison ----------------------------------------------------------------------------------------------
def delong_naive(y, pa, pb):
    "DeLong from explicit pair kernels, O(n_pos * n_neg)."
    comps = []
    for p in (pa, pb):
        x, z = p[y == 1], p[y == 0]
        psi = (x[:, None] > z[None]) + 0.5 * (x[:, None] == z[None])
        comps.append((psi.mean(), psi.mean(1), psi.mean(0)))
    s10 = np.cov(np.stack([comps[0][1], comps[1][1]])); s01 = np.cov(np.stack([comps[0][2], comps[1][2]]))
    m, n = (y == 1).sum(), (y == 0).sum()
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n
    return comps[0][0] - comps[1][0], math.sqrt(var)

def correlated_models(n=300, seed=0):
    r = np.random.default_rng(seed)
    y = r.integers(0, 2, n); latent = r.normal(y, 1.0)
    pa = 1 / (1 + np.exp(-(latent + r.normal(0, .5, n))))
    pb = np.round(1 / (1 + np.exp(-(.6 * latent + r.normal(0, .8, n)))), 2)
    return y, pa, pb

@pytest.mark.parametrize('seed', [0, 1, 2])
def test_delong_fast_equals_definition(seed):
    y, pa, pb = correlated_models(seed=seed)
    d = delong_test(y, pa, pb)
    diff, se = delong_naive(y, pa, pb)
    assert d['auc_diff'] == pytest.approx(diff) and d['se'] == pytest.approx(se)
    assert d['auc_a'] == pytest.approx(skm.roc_auc_score(y, pa)) and d['auc_b'] == pytest.approx(skm.roc_auc_score(y, pb))
    assert d['ci_low'] < d['auc_diff'] < d['ci_high'] and 0 <= d['p_value'] <= 1

def test_delong_known_value():
    "Hand-computed: 3 melanomas, 3 benign lesions."
    y = np.array([1, 1, 1, 0, 0, 0])
    pa = np.array([.9, .8, .3, .7, .2, .1])    # AUC_a = 8/9
    pb = np.array([.9, .4, .3, .7, .5, .1])    # AUC_b = 5/9
    d = delong_test(y, pa, pb)
    assert d['auc_a'] == pytest.approx(8 / 9) and d['auc_b'] == pytest.approx(5 / 9)
    # structural components: a: V10=[1,1,2/3], V01=[2/3,1,1]; b: V10=[1,1/3,1/3], V01=[1/3,1/3,1]
    # differences V10: [0, 2/3, 1/3] (sample var 1/9), V01: [1/3, 2/3, 0] (1/9) -> var = 1/9/3 + 1/9/3 = 2/27
    assert d['se'] == pytest.approx(math.sqrt(2 / 27))
    assert d['z'] == pytest.approx((3 / 9) / math.sqrt(2 / 27))

def test_delong_agrees_with_paired_bootstrap():
    y, pa, pb = correlated_models(n=400, seed=5)
    d, b = delong_test(y, pa, pb), paired_bootstrap_auc(y, pa, pb, n_boot=2000, seed=0)
    assert b['auc_diff'] == pytest.approx(d['auc_diff'])
    assert (b['ci_high'] - b['ci_low']) == pytest.approx(d['ci_high'] - d['ci_low'], rel=0.2)
    assert b['ci_low'] < d['auc_diff'] < b['ci_high']
    assert paired_bootstrap_auc(y, pa, pb, n_boot=500, seed=1) == paired_bootstrap_auc(y, pa, pb, n_boot=500, seed=1)

def test_identical_models():
    y, pa, _ = correlated_models()
    assert delong_test(y, pa, pa)['p_value'] == 1.0
    b = paired_bootstrap_auc(y, pa, pa, n_boot=200)
    assert (b['auc_diff'], b['ci_low'], b['ci_high']) == (0, 0, 0)

# --- predictions table ----------------------------------------------------------------------------------------------
def toy_predictions(n_test=200, n_valid=100, seed=0):
    r = np.random.default_rng(seed); rows = []
    for split, n in [('valid', n_valid), ('test', n_test), ('train', 20)]:
        y = (r.random(n) < .25).astype(int); latent = r.normal(0, 1, n)
        for cfg, s in [('baseline', .8), ('melanet', 1.6)]:
            prob = 1 / (1 + np.exp(-(s * (2 * y - 1) + latent + r.normal(0, 1, n) - 1)))
            rows.append(pd.DataFrame(dict(config=cfg, image_id=[f'{split}{i}' for i in range(n)], path='', split=split,
                                          label=np.where(y, 'malignant', 'benign'), y=y, prob_malignant=prob)))
    return pd.concat(rows, ignore_index=True)

def test_evaluate_predictions():
    preds = toy_predictions()
    m = evaluate_predictions(preds, target_sensitivity=0.9, n_boot=300).set_index('config')
    assert list(m.index) == ['baseline', 'melanet']
    for cfg in m.index:
        te = preds[(preds.config == cfg) & (preds.split == 'test')]
        va = preds[(preds.config == cfg) & (preds.split == 'valid')]
        r = m.loc[cfg]
        assert r['auc'] == pytest.approx(skm.roc_auc_score(te.y, te.prob_malignant))
        assert r['valid_auc'] == pytest.approx(skm.roc_auc_score(va.y, va.prob_malignant))
        assert r['n'] == len(te) and r['n_malignant'] == te.y.sum()
        thr = threshold_for_sensitivity(va.y, va.prob_malignant, 0.9)          # from valid, never from test
        assert r['threshold@valid_thr'] == thr and r['threshold@0.5'] == 0.5
        pred = te.prob_malignant >= thr
        assert r['sensitivity@valid_thr'] == pytest.approx(skm.recall_score(te.y, pred))
        assert r['fn@valid_thr'] == ((te.y == 1) & ~pred).sum()
        assert r['fp@0.5'] == ((te.y == 0) & (te.prob_malignant >= .5)).sum()
        assert r['auc_ci_low'] < r['auc'] < r['auc_ci_high']

def test_threshold_does_not_see_test_rows():
    preds = toy_predictions()
    changed = preds.copy()
    test_rows = changed.split == 'test'
    changed.loc[test_rows, 'prob_malignant'] = 1 - changed.loc[test_rows, 'prob_malignant']
    a, b = evaluate_predictions(preds, n_boot=100), evaluate_predictions(changed, n_boot=100)
    assert (a['threshold@valid_thr'] == b['threshold@valid_thr']).all()

@pytest.mark.parametrize('mutate, msg', [
    (lambda d: d.drop(columns='y'), "lacks column(s) ['y']"),
    (lambda d: d[d.split != 'valid'], "config 'baseline': no rows with split='valid'"),
    (lambda d: pd.concat([d, d.iloc[[5]]]), '1 duplicate prediction row'),
    (lambda d: d.assign(prob_malignant=d.prob_malignant.where(d.index != d.index[(d.config == 'melanet') & (d.split == 'test')][-1])), "config 'melanet': 1 probabilities are NaN"),
    (lambda d: d.assign(y=np.where(d.split == 'test', 0, d.y)), "config 'baseline': only one class present"),
])
def test_evaluate_predictions_refuses(mutate, msg):
    with pytest.raises(MetricInputError) as e: evaluate_predictions(mutate(toy_predictions()), n_boot=50)
    assert msg in str(e.value)

def test_compare_configs():
    preds = toy_predictions()
    c = compare_configs(preds, reference='baseline', n_boot=300)
    assert len(c) == 1 and c.config[0] == 'melanet'
    te = preds[preds.split == 'test']
    d = delong_test(te[te.config == 'melanet'].y.values, te[te.config == 'melanet'].prob_malignant.values,
                    te[te.config == 'baseline'].prob_malignant.values)
    assert c.delong_p[0] == pytest.approx(d['p_value']) and c.auc_diff[0] == pytest.approx(d['auc_diff'])
    shuffled = pd.concat([preds[preds.config == 'baseline'].sample(frac=1, random_state=0), preds[preds.config == 'melanet']])
    assert compare_configs(shuffled, reference='baseline', n_boot=300).delong_p[0] == pytest.approx(d['p_value'])  # matched by image_id
    with pytest.raises(MetricInputError, match='not tested on the same images'):
        compare_configs(preds.drop(index=preds[(preds.config == 'melanet') & (preds.split == 'test')].index[0]))

# --- the paper's table ----------------------------------------------------------------------------------------------
def test_paper_table():
    t = paper_table().set_index('method')
    assert t.loc['MelaNet', 'true_sensitivity_pct'] == pytest.approx(100 * 53 / 75)
    assert round(t.loc['MelaNet', 'true_sensitivity_pct'], 1) == 70.7
    npv_rows = t.dropna(subset=['implied_tn'])
    assert list(npv_rows.index) == ['VGG-GAP', 'VGG-GAP + Augment-5x', 'VGG-GAP + Augment-10x', 'MelaNet']
    assert np.allclose(npv_rows.implied_tn, npv_rows.implied_tn.round(), atol=0.15)   # NPV reading is self-consistent
    assert t.loc['MelaNet', 'implied_tn'].round() == 245
    both = compare_with_paper(evaluate_predictions(toy_predictions(), n_boot=50), dataset='toy')
    assert len(both) == 7 + 2 * 2 and set(both.source) == {'Zunair & Hamza 2020, Table 1', 'toy'}

# --- plots ----------------------------------------------------------------------------------------------------------
def test_plots_draw():
    import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt
    preds = toy_predictions(); m = evaluate_predictions(preds, n_boot=50)
    ax = plot_roc(preds, m)
    assert len(ax.lines) == 2 * 2 + 1 and ax.get_xlabel().startswith('False positive rate')
    assert len(plot_metric_bars(m).axes) == 3 and len(plot_confusion_matrices(m).axes) == 2
    plt.close('all')

# --- Grad-CAM -------------------------------------------------------------------------------------------------------
class TinyGap(nn.Module):
    def __init__(self, ch=6):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, ch, 3, padding=1), nn.BatchNorm2d(ch), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                                  nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU(inplace=True))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(ch, 2)
    def forward(self, x): return self.head(self.pool(self.body(x)))

def closed_form_cam(model, x, cls):
    with torch.no_grad(): acts = model.eval().body(x)
    return F.relu(torch.einsum('k,bkhw->bhw', model.head.weight[cls], acts)) / acts[0, 0].numel()

@pytest.mark.parametrize('cls', [0, 1])
def test_gradcam_equals_cam_for_gap_linear(cls):
    torch.manual_seed(cls); model = TinyGap().train()
    x = torch.randn(3, 3, 12, 12)
    raw, prob = gradcam(model, x, target=cls, upsample=False, normalize=False, score='logit')
    assert torch.allclose(raw, closed_form_cam(model, x, cls), atol=1e-6)
    odds, _ = gradcam(model, x, target=cls, upsample=False, normalize=False)           # default: log-odds of cls
    with torch.no_grad(): acts = model.eval().body(x)
    w = model.head.weight[cls] - model.head.weight[1 - cls]
    assert torch.allclose(odds, F.relu(torch.einsum('k,bkhw->bhw', w, acts)) / acts[0, 0].numel(), atol=1e-6)
    assert torch.allclose(prob, model.eval()(x).softmax(1)[:, 1], atol=1e-6)

def test_gradcam_leaves_model_as_it_was():
    model = TinyGap().train()
    x = torch.randn(2, 3, 12, 12)
    maps, _ = gradcam(model, x)
    assert maps.shape == (2, 12, 12) and maps.min() >= 0 and maps.max() <= 1
    assert model.training                                                      # mode restored
    assert [m.inplace for m in model.modules() if isinstance(m, nn.ReLU)] == [True, True]
    assert not model.body._forward_hooks and all(p.grad is None for p in model.parameters())
    for p in model.parameters(): p.requires_grad_(False)                        # frozen model still explained
    assert torch.allclose(gradcam(model, x, upsample=False, normalize=False, score='logit')[0], closed_form_cam(model, x, 1), atol=1e-6)
    with pytest.raises(ValueError, match='score must be'): gradcam(model, x, score='prob')

def test_gradcam_per_sample_targets_and_vgg_body():
    "A torchvision VGG body (in-place ReLUs, ends in MaxPool) works; per-sample targets pick per-sample classes."
    from torchvision.models.vgg import make_layers, cfgs      # VGG's own feature builder (in-place ReLUs)
    torch.manual_seed(0)
    model = TinyGap(); model.body = make_layers(cfgs['A'][:5]); model.head = nn.Linear(256, 2)
    x = torch.randn(2, 3, 32, 32)
    raw, _ = gradcam(model, x, target=torch.tensor([0, 1]), upsample=False, normalize=False, score='logit')
    assert torch.allclose(raw[0], closed_form_cam(model, x, 0)[0], atol=1e-5)
    assert torch.allclose(raw[1], closed_form_cam(model, x, 1)[1], atol=1e-5)

def test_no_deprecated_backward_hook():
    src = inspect.getsource(ev)
    assert '.register_backward_hook(' not in src

# --- features and UMAP neighbourhoods -------------------------------------------------------------------------------
def test_gap_features():
    model = TinyGap(); x = torch.randn(5, 3, 12, 12)
    f = gap_features(model, [(x[:3], None), (x[3:], None)], progress=False)
    assert f.shape == (5, 6)
    with torch.no_grad(): assert np.allclose(f, model.eval().pool(model.body(x)).numpy(), atol=1e-6)

def test_neighbour_agreement():
    r = np.random.default_rng(0)
    feats = np.concatenate([r.normal(0, 1, (150, 8)), r.normal(2, 1, (50, 8)), r.normal(2, 1, (40, 8)), r.normal(0, 1, (40, 8)),
                            r.normal(9, 1, (20, 8))])
    group = ['benign'] * 150 + ['malignant'] * 50 + ['synthetic good'] * 40 + ['synthetic bad'] * 40 + ['synthetic far'] * 20
    a = neighbour_agreement(feats, group, k=7).set_index('group')
    share = a['malignant_share_of_k_nearest_real']
    assert share['synthetic good'] > 0.7 > 0.2 > share['synthetic bad']
    assert share['benign'] < 0.2 and share['malignant'] > 0.7
    assert (a.k == 7).all() and a.real_malignant_prevalence.iloc[0] == pytest.approx(0.25)
    ratio = a['nearest_real_distance_ratio']
    assert 0.6 < ratio['synthetic good'] < 1.6 and ratio['synthetic far'] > 4
    # a duplicate of a real point does not count itself as its own neighbour
    dup = neighbour_agreement(np.r_[feats[:200], feats[:1]], group[:200] + ['benign'], k=1).set_index('group')
    assert dup.loc['benign', 'n'] == 151

# --- files for the pipeline, and Grad-CAM through a fastai Learner -------------------------------------------------
def test_write_evaluation(tmp_path):
    import json
    files = write_evaluation(toy_predictions(), tmp_path/'eval', reference='baseline', n_boot=100, dataset='toy')
    assert sorted(files) == ['calibration.csv', 'confusion.png', 'metric_bars.png', 'metrics.json', 'paired_tests.csv',
                             'paper_comparison.csv', 'reliability.png', 'results.csv', 'roc.png']
    saved = json.loads((tmp_path/'eval'/'metrics.json').read_text())
    assert set(saved['configs']) == {'baseline', 'melanet'} and saved['paired_tests'][0]['reference'] == 'baseline'
    assert '70.7%' in saved['note'] and saved['settings']['threshold_split'] == 'valid'
    assert len(pd.read_csv(tmp_path/'eval'/'results.csv')) == 2
    assert not [p for p in (tmp_path/'eval').iterdir() if '.tmp' in p.name]

def test_learner_gradcam(tmp_path):
    from fastai.vision.all import Learner, CrossEntropyLossFlat
    from melanet_nb.data import make_demo_dataset, read_dataset, add_valid_split, melanet_dls
    table = add_valid_split(read_dataset(make_demo_dataset(tmp_path/'demo', n=30, size=32, progress=False)), seed=0)
    learn = Learner(melanet_dls(table, size=32, bs=8), TinyGap(), loss_func=CrossEntropyLossFlat())
    rows = table[table.split == 'test'].reset_index(drop=True)
    imgs, maps, probs = learner_gradcam(learn, rows, bs=4)
    assert imgs.shape == (len(rows), 32, 32, 3) and maps.shape == (len(rows), 32, 32)
    assert imgs.min() >= 0 and imgs.max() <= 1 and imgs.std() > 0.02             # normalisation undone
    with learn.no_bar(): ref, _ = learn.get_preds(dl=learn.dls.test_dl(rows))
    assert np.allclose(probs, ref[:, 1].numpy(), atol=1e-5)
    with pytest.raises(MetricInputError, match='no rows'): learner_gradcam(learn, rows.iloc[:0])

def test_write_evaluation_single_config(tmp_path):
    preds = toy_predictions(); preds = preds[preds.config == 'baseline']
    files = write_evaluation(preds, tmp_path, n_boot=50)
    paired = pd.read_csv(files['paired_tests.csv'])                 # header only, still readable
    assert paired.empty and list(paired.columns) == ev.PAIRED_COLUMNS

# --- the predictions-table contract ---------------------------------------------------------------------------------
from pathlib import Path
from melanet_nb.data import DIAGNOSES, LABELS, PRED_COLUMNS, prob_columns

ROOT = Path(__file__).resolve().parents[1]

def test_old_binary_table_is_upgraded():
    old = toy_predictions()
    new = check_predictions(old)
    assert list(new.columns[:7]) == PRED_COLUMNS + ['prob_benign', 'prob_malignant']
    assert (new.true_class == np.array(LABELS)[old.y]).all() and np.allclose(new.prob_benign, 1 - old.prob_malignant)
    assert {'path', 'label'} <= set(new.columns)                                     # extra columns kept
    pd.testing.assert_frame_equal(evaluate_predictions(old, n_boot=100), evaluate_predictions(new, n_boot=100))
    assert not hasattr(ev, 'PRED_COLUMNS') or ev.PRED_COLUMNS is PRED_COLUMNS        # one definition, in data

def three_class(n=6):
    y = np.arange(n) % 3
    p = np.full((n, 3), .1); p[np.arange(n), y] = .8
    return pd.DataFrame(dict(config='m', image_id=[f'i{i}' for i in range(n)], split='test', true_class=np.array(DIAGNOSES)[y],
                             y=y, **dict(zip(prob_columns(DIAGNOSES), p.T))))

@pytest.mark.parametrize('mutate, msg', [
    (lambda d: d.drop(columns='true_class'), "lacks column(s) ['true_class']"),
    (lambda d: d.drop(columns=prob_columns(DIAGNOSES)), "lacks column(s) ['prob_<class> (one per class)']"),
    (lambda d: d.assign(prob_nevus=d.prob_nevus + .2), 'row(s) whose probabilities do not sum to 1'),
    (lambda d: d.assign(prob_nevus=np.r_[np.nan, d.prob_nevus[1:]]), "config 'm': 1 probabilities are NaN"),
    (lambda d: d.assign(prob_nevus=np.r_[-.1, d.prob_nevus[1:]]), "1 probabilities are outside [0, 1]"),
    (lambda d: d.assign(y=(d.y + 1) % 3), 'y disagrees with true_class in 6 row(s)'),
    (lambda d: d.assign(y=d.y + 0.5), 'y must be a class index 0..2'),
    (lambda d: d.assign(true_class='mole'), "true_class value(s) ['mole']"),
    (lambda d: pd.concat([d, d.iloc[[2]]]), '1 duplicate prediction row(s), e.g. config='),
    (lambda d: d.drop(columns=['prob_melanoma', 'prob_seborrheic_keratosis']).assign(prob_nevus=1.), 'at least 2'),
])
def test_check_predictions_refuses(mutate, msg):
    with pytest.raises(MetricInputError) as e: check_predictions(mutate(three_class()))
    assert msg in str(e.value)

def test_committed_results_unchanged():
    "The binary metrics of a committed run, recomputed from its predictions.csv, equal its committed results.csv."
    folder = ROOT/'results'/'isic2016'
    if not (folder/'results.csv').is_file(): pytest.skip('no committed results (installed package)')
    preds = pd.read_csv(folder/'predictions.csv', dtype={'image_id': str})
    ours, theirs = evaluate_predictions(preds, n_boot=2000, seed=42), pd.read_csv(folder/'results.csv')
    pd.testing.assert_frame_equal(ours, theirs, check_dtype=False, rtol=1e-12)
    paired = compare_configs(preds, reference='baseline', n_boot=2000, seed=42)
    pd.testing.assert_frame_equal(paired, pd.read_csv(folder/'paired_tests.csv'), check_dtype=False, rtol=1e-12)

# --- K classes ------------------------------------------------------------------------------------------------------
def multiclass_predictions(n_test=240, n_valid=120, seed=0, strengths=(0.6, 1.5), sharpen=1.0):
    r = np.random.default_rng(seed); rows = []
    for split, n in [('valid', n_valid), ('test', n_test)]:
        y = r.choice(3, n, p=[.6, .25, .15]); latent = r.normal(0, 1, (n, 3))
        for cfg, s in zip(['baseline', 'melanet'], strengths):
            logits = sharpen * (2 * s * np.eye(3)[y] + latent + r.normal(0, 1, (n, 3)))
            p = np.exp(logits - logits.max(1, keepdims=True)); p /= p.sum(1, keepdims=True)
            rows.append(pd.DataFrame(dict(config=cfg, image_id=[f'{split}{i}' for i in range(n)], split=split,
                                          true_class=np.array(DIAGNOSES)[y], y=y, **dict(zip(prob_columns(DIAGNOSES), p.T)))))
    return pd.concat(rows, ignore_index=True)

@pytest.mark.parametrize('seed', [0, 1, 2])
def test_multiclass_metrics_match_sklearn(seed):
    d = multiclass_predictions(seed=seed).query("config == 'baseline' and split == 'test'")
    y, p = d.y.values, d[prob_columns(DIAGNOSES)].values; pred = p.argmax(1)
    summary, per_class, cm = multiclass_metrics(y, p, DIAGNOSES, n_boot=200, seed=seed)
    assert (cm.values == skm.confusion_matrix(y, pred)).all() and list(cm.index) == DIAGNOSES == list(cm.columns)
    assert np.allclose(per_class.sensitivity, skm.recall_score(y, pred, average=None))
    assert np.allclose(per_class.precision, skm.precision_score(y, pred, average=None))
    assert np.allclose(per_class.f1, skm.f1_score(y, pred, average=None))
    assert np.allclose(per_class.specificity, [skm.recall_score(y == k, pred == k, pos_label=False) for k in range(3)])
    assert np.allclose(per_class.auc, [skm.roc_auc_score(y == k, p[:, k]) for k in range(3)])
    assert (per_class.auc_ci_low < per_class.auc).all() and (per_class.auc < per_class.auc_ci_high).all()
    assert summary['accuracy'] == pytest.approx(skm.accuracy_score(y, pred))
    assert summary['balanced_accuracy'] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert summary['macro_f1'] == pytest.approx(skm.f1_score(y, pred, average='macro'))
    assert summary['weighted_f1'] == pytest.approx(skm.f1_score(y, pred, average='weighted'))
    assert summary['macro_auc'] == pytest.approx(np.mean([skm.roc_auc_score(y == k, p[:, k]) for k in range(3)]))
    assert summary['melanoma_auc'] == pytest.approx(skm.roc_auc_score(y == 1, p[:, 1]))
    assert summary['melanoma_auc_se_delong'] == pytest.approx(delong_auc_se(y == 1, p[:, 1]))
    assert [summary[f'n_{c}'] for c in DIAGNOSES] == list(np.bincount(y, minlength=3))

def test_multiclass_refuses():
    d = multiclass_predictions().query("config == 'baseline' and split == 'test'")
    y, p = d.y.values, d[prob_columns(DIAGNOSES)].values
    with pytest.raises(MetricInputError, match=r"class\(es\) \['seborrheic_keratosis'\] absent"): multiclass_metrics(y[y < 2], p[y < 2], DIAGNOSES)
    with pytest.raises(MetricInputError, match='do not sum to 1'): multiclass_metrics(y, p * .9, DIAGNOSES)
    with pytest.raises(MetricInputError, match='class indices'): multiclass_metrics(y + 1, p, DIAGNOSES)
    with pytest.raises(MetricInputError, match='length mismatch'): multiclass_metrics(y[1:], p, DIAGNOSES)
    assert 'melanoma_auc' not in multiclass_metrics(y, p, ['a', 'b', 'c'], n_boot=20)[0]

def test_evaluate_predictions_dispatches_on_k():
    preds = multiclass_predictions()
    m = evaluate_predictions(preds, n_boot=200).set_index('config')
    pc = per_class_metrics(preds, n_boot=200)
    assert list(m.index) == ['baseline', 'melanet'] and len(pc) == 6
    assert list(pc.columns[:10]) == ['config', 'class', 'n', 'sensitivity', 'specificity', 'precision', 'f1', 'auc', 'auc_ci_low', 'auc_ci_high']
    for cfg in m.index:
        te = preds.query("config == @cfg and split == 'test'"); va = preds.query("config == @cfg and split == 'valid'")
        cols = prob_columns(DIAGNOSES)
        assert m.loc[cfg, 'balanced_accuracy'] == pytest.approx(skm.balanced_accuracy_score(te.y, te[cols].values.argmax(1)))
        assert m.loc[cfg, 'valid_balanced_accuracy'] == pytest.approx(skm.balanced_accuracy_score(va.y, va[cols].values.argmax(1)))
        got = pc[pc.config == cfg].set_index('class')
        assert np.allclose(got.loc[DIAGNOSES, 'sensitivity'], skm.recall_score(te.y, te[cols].values.argmax(1), average=None))
    assert m.loc['melanet', 'balanced_accuracy'] > m.loc['baseline', 'balanced_accuracy']
    assert evaluate_predictions(preds[preds.split == 'test'], n_boot=50).valid_balanced_accuracy.isna().all()   # valid optional

def test_paired_bootstrap_bacc():
    preds = multiclass_predictions(seed=3).query("split == 'test'")
    y = preds[preds.config == 'baseline'].y.values
    pa, pb = (preds[preds.config == c][prob_columns(DIAGNOSES)].values.argmax(1) for c in ['melanet', 'baseline'])
    idx = next(ev._stratified_resamples(y, 4, 0, classes=np.unique(y)))
    assert np.allclose(ev._bacc_rows(y, pa, idx), [skm.balanced_accuracy_score(y[i], pa[i]) for i in idx])
    b = paired_bootstrap_bacc(y, pa, pb, n_boot=1000, seed=0)
    assert b['bacc_diff'] == pytest.approx(skm.balanced_accuracy_score(y, pa) - skm.balanced_accuracy_score(y, pb))
    assert b['ci_low'] < b['bacc_diff'] < b['ci_high'] and 0 <= b['p_value'] <= 1
    assert paired_bootstrap_bacc(y, pa, pb, n_boot=300, seed=1) == paired_bootstrap_bacc(y, pa, pb, n_boot=300, seed=1)
    same = paired_bootstrap_bacc(y, pa, pa, n_boot=100)
    assert (same['bacc_diff'], same['ci_low'], same['ci_high'], same['p_value']) == (0, 0, 0, 1)

def test_compare_configs_multiclass():
    preds = multiclass_predictions()
    c = compare_configs(preds, reference='baseline', n_boot=300)
    assert list(c.columns) == ev.PAIRED_COLUMNS_MULTICLASS and len(c) == 1
    te = preds[preds.split == 'test']
    a, b = (te[te.config == k] for k in ['melanet', 'baseline'])
    d = delong_test(a.y.values == 1, a.prob_melanoma.values, b.prob_melanoma.values)
    assert c.delong_p[0] == pytest.approx(d['p_value']) and c.melanoma_auc_diff[0] == pytest.approx(d['auc_diff'])
    assert c.bacc_diff[0] == pytest.approx(skm.balanced_accuracy_score(a.y, a[prob_columns(DIAGNOSES)].values.argmax(1))
                                           - skm.balanced_accuracy_score(b.y, b[prob_columns(DIAGNOSES)].values.argmax(1)))

def test_compare_with_thesis():
    preds = multiclass_predictions()
    t = compare_with_thesis(evaluate_predictions(preds, n_boot=50), per_class_metrics(preds, n_boot=50), dataset='toy')
    thesis = t[t.source == ev.THESIS_SOURCE].set_index('split')
    assert thesis.loc['official test (600)', ['balanced_accuracy_pct', 'sensitivity_melanoma_pct',
                                              'sensitivity_seborrheic_keratosis_pct', 'sensitivity_nevus_pct']].tolist() == [64.1, 58.1, 55.2, 78.9]
    assert len(t) == 4 and set(t.source) == {ev.THESIS_SOURCE, 'toy'}

# --- calibration ----------------------------------------------------------------------------------------------------
def test_brier_ece_nll():
    y, p = np.array([1, 0, 0, 1]), np.array([.9, .9, .4, .6])
    assert brier_score(y, p) == pytest.approx(skm.brier_score_loss(y, p))
    assert brier_score(y, np.column_stack([1 - p, p])) == pytest.approx(2 * skm.brier_score_loss(y, p))   # K-class convention
    assert expected_calibration_error(y, p) == pytest.approx(0.4)                    # bins: 0.9 (1 of 2 right), 0.6 (2 of 2)
    assert log_loss(y, p) == pytest.approx(skm.log_loss(y, p))
    d = multiclass_predictions().query("config == 'baseline' and split == 'test'")
    y3, p3 = d.y.values, d[prob_columns(DIAGNOSES)].values
    assert log_loss(y3, p3) == pytest.approx(skm.log_loss(y3, p3))
    conf, right = p3.max(1), p3.argmax(1) == y3                                        # ECE by an explicit loop over bins
    edges, ece = np.linspace(0, 1, 16), 0.
    for lo, hi in zip(edges[:-1], edges[1:]):
        inb = (conf > lo) & (conf <= hi)
        if inb.any(): ece += inb.mean() * abs(right[inb].mean() - conf[inb].mean())
    assert expected_calibration_error(y3, p3) == pytest.approx(ece)
    t = reliability_table(y3, p3)
    assert len(t) == ev.ECE_BINS and t.n.sum() == len(y3)

def test_fit_temperature():
    r = np.random.default_rng(0)
    z = r.normal(0, 2, (5000, 3)); p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = (r.random(5000)[:, None] > p.cumsum(1)).sum(1)                                 # labels drawn from p: calibrated
    assert fit_temperature(p, y) == pytest.approx(1, abs=0.06)
    over = p ** 2.5 / (p ** 2.5).sum(1, keepdims=True)
    t = fit_temperature(over, y)
    assert t > 1 and t == pytest.approx(2.5, abs=0.2)
    assert np.allclose(apply_temperature(over, 2.5), p) and (apply_temperature(over, t).argmax(1) == over.argmax(1)).all()
    pb = r.uniform(.01, .99, 300); yb = (r.random(300) < pb).astype(int)               # binary 1-D input
    assert fit_temperature(pb, yb) == pytest.approx(fit_temperature(np.column_stack([1 - pb, pb]), yb))
    assert apply_temperature(pb, 2.).shape == (300,)
    with pytest.raises(MetricInputError, match='temperature must be > 0'): apply_temperature(p, 0)

def test_calibration_table_never_reads_test_rows():
    preds = multiclass_predictions(sharpen=3.)
    cal = calibration_table(preds)
    scaled, raw = (cal[cal.probabilities == k].set_index('config') for k in ['temperature scaled', 'raw'])
    assert (scaled.temperature > 1.5).all() and (scaled.nll < raw.nll).all() and (scaled.accuracy == raw.accuracy).all()
    corrupted = preds.copy(); te = corrupted.split == 'test'
    corrupted.loc[te, prob_columns(DIAGNOSES)] = np.roll(corrupted.loc[te, prob_columns(DIAGNOSES)].values, 1, axis=1)
    assert calibration_table(corrupted).temperature.tolist() == cal.temperature.tolist()
    va = preds.query("config == 'melanet' and split == 'valid'")
    assert scaled.loc['melanet', 'temperature'] == pytest.approx(fit_temperature(va[prob_columns(DIAGNOSES)].values, va.y.values))
    with pytest.raises(MetricInputError, match='another split'): calibration_table(preds, select_split='test')
    binary = calibration_table(toy_predictions())
    te = toy_predictions().query("config == 'baseline' and split == 'test'")
    assert binary.brier.iloc[0] == pytest.approx(skm.brier_score_loss(te.y, te.prob_malignant))

# --- Grad-CAM with K classes, and inside the lesion mask -------------------------------------------------------------
def test_gradcam_predicted_class_three_classes():
    torch.manual_seed(0)
    model = TinyGap(); model.head = nn.Linear(6, 3)
    x = torch.randn(4, 3, 12, 12)
    maps, probs = gradcam(model, x, target='predicted', upsample=False, normalize=False, prob_of=None)
    with torch.no_grad(): acts, logits = model.eval().body(x), model(x)
    assert torch.allclose(probs, logits.softmax(1), atol=1e-6)
    for i, c in enumerate(logits.argmax(1).tolist()):
        others = [j for j in range(3) if j != c]
        w = model.head.weight[c] - logits[i, others].softmax(0) @ model.head.weight[others]
        assert torch.allclose(maps[i], F.relu(torch.einsum('k,khw->hw', w, acts[i])) / acts[0, 0].numel(), atol=1e-6)
    with pytest.raises(ValueError, match='target must be'): gradcam(model, x, target='best')

def test_malignant_cases_three_classes():
    preds = multiclass_predictions()
    caught, missed = malignant_cases(preds, 'melanet', n=3)
    cols = prob_columns(DIAGNOSES)
    assert (caught.true_class == 'melanoma').all() and (caught[cols].values.argmax(1) == 1).all()
    assert (missed[cols].values.argmax(1) != 1).all() and caught.prob_melanoma.is_monotonic_decreasing
    c2, _ = malignant_cases(toy_predictions(), 'melanet', threshold=0.3)
    assert (c2.prob_malignant >= 0.3).all() and (c2.y == 1).all()

def test_cam_mask_share():
    cam = np.zeros((4, 4)); cam[:2, :2] = 1; cam[3, 3] = 2
    mask = np.zeros((4, 4), np.uint8); mask[:2, :2] = 255
    assert cam_mask_share(cam, mask) == pytest.approx(4 / 6)
    assert cam_mask_share(np.ones((4, 4)), mask > 0) == pytest.approx(0.25)
    assert math.isnan(cam_mask_share(np.zeros((4, 4)), mask))
    with pytest.raises(MetricInputError, match='differ in shape'): cam_mask_share(cam, mask[:2])

class RedFinder(nn.Module):
    "Known Grad-CAM: channel 0 fires on red pixels (of ImageNet-normalized input) and votes malignant; channel 1 is 1."
    def __init__(self, malignant_bias=1.5):
        super().__init__()
        conv = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            conv.weight.zero_(); conv.weight[0, 0, 0, 0], conv.weight[0, 1, 0, 0] = 1., -1.; conv.bias.copy_(torch.tensor([-1., 1.]))
        self.body = nn.Sequential(conv, nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(2, 2)
        with torch.no_grad(): self.head.weight.copy_(torch.tensor([[0., 1.], [1., 0.]])); self.head.bias.copy_(torch.tensor([0., malignant_bias]))
    def forward(self, x): return self.head(self.pool(self.body(x)))

def red_square_table(folder, side=32):
    from PIL import Image
    specs = [('whole', (side, side), (8, 8, 24, 24), (8, 8, 24, 24)), ('half', (side, side), (8, 8, 24, 24), (8, 8, 16, 24)),
             ('wide', (side, side * 3 // 4), (16, 4, 28, 16), (16, 4, 28, 16)), ('black', (side, side), None, (8, 8, 24, 24)),
             ('nomask', (side, side), (8, 8, 24, 24), None)]
    rows = []
    for i, (name, wh, square, lesion) in enumerate(specs):
        img, mask = np.zeros((wh[1], wh[0], 3), np.uint8), np.zeros((wh[1], wh[0]), np.uint8)
        if square: img[square[1]:square[3], square[0]:square[2], 0] = 255
        if lesion: mask[lesion[1]:lesion[3], lesion[0]:lesion[2]] = 255
        Image.fromarray(img).save(folder/f'{name}.png'); Image.fromarray(mask).save(folder/f'{name}_mask.png')
        rows.append(dict(image_id=name, path=str(folder/f'{name}.png'), mask=str(folder/f'{name}_mask.png') if lesion else np.nan,
                         label=['benign', 'malignant'][i % 2], split='valid' if i % 2 else 'train'))
    return pd.DataFrame(rows)

def test_lesion_attention_known_cam(tmp_path):
    from fastai.vision.all import Learner, CrossEntropyLossFlat
    from melanet_nb.data import melanet_dls
    table = red_square_table(tmp_path)
    learn = Learner(melanet_dls(table, size=32, bs=4), RedFinder(), loss_func=CrossEntropyLossFlat())
    a = lesion_attention(learn, table, bs=2).set_index('image_id')
    assert list(a.index) == list(table.image_id)
    assert a.loc['whole', 'cam_in_mask_share'] == pytest.approx(1) and a.loc['whole', 'mask_area_share'] == pytest.approx(0.25)
    assert a.loc['half', 'cam_in_mask_share'] == pytest.approx(0.5) and a.loc['half', 'mask_area_share'] == pytest.approx(0.125)
    assert a.loc['wide', 'cam_in_mask_share'] == pytest.approx(1)                    # padding: image and mask stay aligned
    assert a.loc['black', 'empty_map'] and math.isnan(a.loc['black', 'cam_in_mask_share'])
    assert not a.loc['nomask', 'has_mask'] and math.isnan(a.loc['nomask', 'mask_area_share'])
    assert set(a.predicted_class.dropna()) == {'malignant'} == set(a.explained_class.dropna())
    benign = Learner(learn.dls, RedFinder(malignant_bias=-5.), loss_func=CrossEntropyLossFlat())
    b = lesion_attention(benign, table).set_index('image_id')                        # predicted benign: the complement
    assert b.loc['whole', 'cam_in_mask_share'] == pytest.approx(0) and b.loc['whole', 'explained_class'] == 'benign'
    fixed = lesion_attention(benign, table, target='malignant').set_index('image_id')  # a fixed class instead
    assert fixed.loc['whole', 'cam_in_mask_share'] == pytest.approx(1)
    s = summarize_lesion_attention(pd.concat([a.reset_index().assign(config='red'), b.reset_index().assign(config='benign')])).set_index('config')
    assert s.loc['red', ['n', 'n_empty_maps', 'n_no_mask']].tolist() == [3, 1, 1] and s.loc['red', 'share_above_chance'] == 1
    assert s.loc['benign', 'n'] == 4 and s.loc['benign', 'median_cam_in_mask_share'] == pytest.approx(0)
    assert summarize_lesion_attention(a.reset_index()).config.tolist() == ['model']
    with pytest.raises(MetricInputError, match=r"needs column\(s\) \['mask'\]"): lesion_attention(learn, table.drop(columns='mask'))

def test_learner_gradcam_class_names(tmp_path):
    from fastai.vision.all import Learner, CrossEntropyLossFlat
    from melanet_nb.data import melanet_dls
    table = red_square_table(tmp_path)
    learn = Learner(melanet_dls(table, size=32, bs=4), RedFinder(), loss_func=CrossEntropyLossFlat())
    _, maps_name, p_name = learner_gradcam(learn, table, target='malignant')
    _, maps_idx, p_idx = learner_gradcam(learn, table, target=1)
    assert np.allclose(maps_name, maps_idx) and np.allclose(p_name, p_idx)
    _, _, p_benign = learner_gradcam(learn, table, prob_of='benign')
    assert np.allclose(p_benign, 1 - p_idx, atol=1e-6)
    with pytest.raises(MetricInputError, match="class 'mole' not in"): learner_gradcam(learn, table, target='mole')

# --- synthesis quality ----------------------------------------------------------------------------------------------
def test_kernel_distance():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 6)), rng.normal(1., 1., size=(30, 6))
    assert kernel_distance(a, b) == pytest.approx(kernel_distance(b, a))                  # symmetric
    assert kernel_distance(a[::-1], b[rng.permutation(30)]) == pytest.approx(kernel_distance(a, b))  # order-free
    assert kernel_distance(a, b) > 0.5 > abs(kernel_distance(a[:20], a[20:]))
    with pytest.raises(ValueError, match='at least 2'): kernel_distance(a, b[:1])

def test_synthesis_quality_known_answers():
    r = np.random.default_rng(0)
    benign, malignant = r.normal(0, 1, (200, 16)), r.normal(1, 1, (100, 16))
    sources = benign[:60]
    good = synthesis_quality(benign, malignant, r.normal(1, 1, (60, 16)), sources=sources, seed=0)
    bad = synthesis_quality(benign, malignant, r.normal(0, 1, (60, 16)), sources=sources, seed=0)
    assert good['probe_cv_auc'] > 0.95 and good['real_malignant_called_malignant_cv'] > 0.9 > 0.1 > good['real_benign_called_malignant_cv']
    assert good['kid_synthetic_vs_malignant'] < 0.2 * good['kid_benign_vs_malignant']
    assert abs(good['kid_malignant_halves']) < 0.2 * good['kid_benign_vs_malignant']
    assert good['synthetic_called_malignant'] > 0.9 and good['sources_called_malignant'] < 0.1
    assert good['n_sources_in_probe_training'] == 60
    assert bad['kid_gap_closed'] < 0.2 and bad['synthetic_called_malignant'] < 0.1
    assert synthesis_quality(benign, malignant, malignant[:10], seed=0) == synthesis_quality(benign, malignant, malignant[:10], seed=0)
    import json; json.dumps(good)                                                          # plain numbers only
    with pytest.raises(MetricInputError, match='one width'): synthesis_quality(benign, malignant[:, :8], malignant)

def test_frozen_features(tmp_path):
    from PIL import Image
    paths = []
    for i in range(3):
        p = tmp_path/f'{i}.png'; Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(p); paths.append(p)
    f = frozen_features(paths, size=32, bs=2)
    assert f.shape == (3, 1280) and np.isfinite(f).all()
    assert np.allclose(frozen_features(paths[:1], size=32), f[:1], atol=1e-5)
    assert frozen_features([], size=32).shape == (0, 1280)

# --- files for K classes --------------------------------------------------------------------------------------------
def test_write_evaluation_multiclass(tmp_path):
    import json
    preds = multiclass_predictions()
    attention = pd.DataFrame(dict(config='melanet', image_id=['a', 'b', 'c'], cam_in_mask_share=[.8, np.nan, .2],
                                  mask_area_share=[.3, .3, np.nan], empty_map=[False, True, False], has_mask=[True, True, False]))
    files = write_evaluation(preds, tmp_path/'eval', reference='baseline', n_boot=100, dataset='toy', lesion_attention=attention)
    assert sorted(files) == ['calibration.csv', 'confusion.png', 'confusion_baseline.csv', 'confusion_melanet.csv',
                             'lesion_attention.csv', 'lesion_attention_summary.csv', 'metrics.json', 'paired_tests.csv',
                             'paper_comparison.csv', 'per_class.csv', 'reliability.png', 'results.csv', 'roc.png']
    saved = json.loads((tmp_path/'eval'/'metrics.json').read_text())
    assert saved['settings']['classes'] == DIAGNOSES and saved['settings']['decision'] == 'argmax'
    assert saved['lesion_attention'][0]['n'] == 1 and saved['lesion_attention'][0]['n_empty_maps'] == 1
    cm = pd.read_csv(tmp_path/'eval'/'confusion_melanet.csv').set_index('true')
    te = preds.query("config == 'melanet' and split == 'test'")
    assert (cm.loc[DIAGNOSES, DIAGNOSES].values == skm.confusion_matrix(te.y, te[prob_columns(DIAGNOSES)].values.argmax(1))).all()
    assert len(pd.read_csv(tmp_path/'eval'/'per_class.csv')) == 6
    assert not [p for p in (tmp_path/'eval').iterdir() if '.tmp' in p.name]
    import matplotlib.pyplot as plt; plt.close('all')
