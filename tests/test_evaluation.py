"""Unit tests of melanet_nb.evaluation: every metric against scikit-learn, DeLong against its O(n^2) definition, Grad-CAM
against the closed-form CAM of a GAP + linear head, and the predictions-table contract."""
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
    assert sorted(files) == ['confusion.png', 'metric_bars.png', 'metrics.json', 'paired_tests.csv',
                             'paper_comparison.csv', 'results.csv', 'roc.png']
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
