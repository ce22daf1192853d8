"Tests of the fine-tuning strategies study: frozen blocks, stratified batches, Lite0/1/2 weights, merged/sequential tables, paired bootstrap, resumable runs."
import json, os, warnings
from pathlib import Path
from unittest import mock
import numpy as np, pandas as pd, pytest, torch, timm
from sklearn.metrics import f1_score, accuracy_score, balanced_accuracy_score

torch.set_num_threads(1)
from fastai.vision.all import DataLoaders, TensorCategory
from torch.utils.data import TensorDataset
from melanet_nb.data import DIAGNOSES, LABELS, DataError, add_valid_split, demo_data, read_dataset, melanet_dls
from melanet_nb.classifier import (EFFNET_LITE_ARCHS, FrozenBlockTraining, StratifiedOrder, create_classifier, effnet_lite_weights_file,
                                   fit_classifier, frozen_block_splitter, frozen_blocks, load_effnet_lite_weights, melanet_learner,
                                   nedelcu_augmentations, stratified_batches)
from melanet_nb.evaluation import paired_bootstrap_bacc
from melanet_nb.strategies import (first_stage_table, merged_table, paired_bootstrap_metric, run_study, study_pairs, study_runs,
                                   read_public, PAPER_STRATEGIES)

SHARED = Path(__file__).resolve().parents[2]/'shared'/'data'


# --- offline weights ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('arch', list(EFFNET_LITE_ARCHS))
def test_each_lite_variant_gets_its_own_packaged_weights(arch):
    shipped = torch.load(effnet_lite_weights_file(EFFNET_LITE_ARCHS[arch]), map_location='cpu', weights_only=True)
    m = create_classifier(arch, n_out=3)
    body = m.body.model.state_dict()
    src = [v for k, v in shipped.items() if not k.startswith('_fc.')]   # the 1000-class classifier is dropped
    assert len(src) == len(body) and all(torch.equal(a, b) for a, b in zip(src, body.values()))
    assert m.weights == 'imagenet'

def test_hub_backbone_offline_raises_or_is_marked_random():
    create = timm.create_model
    def offline(*a, pretrained=False, **kw):
        if pretrained: raise OSError('Name or service not known')
        return create(*a, **kw)
    with mock.patch('timm.create_model', offline):
        with pytest.raises(RuntimeError, match="could not load ImageNet weights for timm 'mobilenetv2_100'.*if_no_weights='random'"):
            create_classifier('mobilenetv2_100')
        with pytest.warns(UserWarning, match='training from random weights'):
            m = create_classifier('mobilenetv2_100', n_out=3, if_no_weights='random')
    assert m.weights == 'random (hub weights unavailable)'


# --- frozen blocks -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('arch,n', [('tf_efficientnet_lite1', 7), ('efficientnet_b3', 7), ('resnet50', 5), ('mobilenetv2_100', 5)])
def test_block_counts_follow_the_paper(arch, n):
    m = create_classifier(arch, pretrained=False, n_out=3)
    blocks, rest = frozen_blocks(m)
    assert len(blocks) == n
    ids = [id(p) for b in blocks for p in b] + [id(p) for p in rest]
    assert sorted(ids) == sorted(id(p) for p in m.parameters())   # every parameter exactly once

def _tiny_dls(n=12, sz=32):
    x, y = torch.randn(n, 3, sz, sz), TensorCategory(torch.arange(n) % 3)
    dls = DataLoaders.from_dsets(TensorDataset(x, y), TensorDataset(x, y), bs=4)
    dls.vocab = DIAGNOSES
    return dls

def test_frozen_blocks_change_only_the_active_block():
    learn = melanet_learner(_tiny_dls(), pretrained=False); learn.metrics = []
    learn.splitter = frozen_block_splitter; learn.create_opt()
    before = [[p.detach().clone() for p in g] for g in learn.opt.param_lists]
    with learn.no_logging(), learn.no_bar(): learn.fit(2, np.array([1e-3] * 8), cbs=FrozenBlockTraining(2, n_blocks=1))
    changed = [any(not torch.equal(a, p) for a, p in zip(b, g)) for b, g in zip(before, learn.opt.param_lists)]
    assert changed == [False] * 7 + [True]   # only the head moved, even with lr > 0 everywhere

def test_frozen_blocks_strategy_runs_blocks_times_epochs():
    learn = melanet_learner(_tiny_dls(), pretrained=False); learn.metrics = []
    with learn.no_logging(), learn.no_bar(): fit_classifier(learn, strategy='frozen_blocks', epochs_per_block=2, monitor='valid_loss')
    assert len(learn.recorder.values) == 14 and learn.opt.hypers[-1]['lr'] == 1e-4 and learn.opt.hypers[0]['lr'] == 1e-5


# --- stratified batches and augmentation -------------------------------------------------------------------------------
def test_stratified_order_balances_every_batch_and_oversamples():
    targets = np.array([0] * 50 + [1] * 5 + [2] * 10)
    order = StratifiedOrder(targets, per_class=3, seed=1)
    for _ in range(2):   # two epochs: queues refill and reshuffle
        ep = np.array(order(list(range(len(targets))))).reshape(-1, 9)
        assert ep.shape == (7, 9) and all((np.bincount(targets[b], minlength=3) == 3).all() for b in ep)

def test_stratified_batches_on_demo_dataloaders():
    tbl = add_valid_split(read_dataset(demo_data()), seed=0)
    dls = stratified_batches(melanet_dls(tbl, size=32, bs=16, target='diagnosis'))
    assert dls.train.bs == 15
    for _, (xb, yb) in zip(range(2), dls.train): assert torch.bincount(yb, minlength=3).tolist() == [5, 5, 5]

def test_nedelcu_augmentations_keep_shape():
    img = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    assert nedelcu_augmentations(seed=0)(image=img)['image'].shape == img.shape


# --- study tables ------------------------------------------------------------------------------------------------------
def _rows(ids, labels, split='train', dx=None):
    t = pd.DataFrame(dict(image_id=ids, path='', label=labels, split=split, source='t'))
    return t if dx is None else t.assign(diagnosis=dx)

def test_merged_keeps_known_diagnoses_and_never_counts_twice():
    target = pd.concat([_rows(['a', 'b', 'c'], ['benign', 'malignant', 'benign'], 'train', ['nevus', 'melanoma', 'seborrheic_keratosis']),
                        _rows(['v'], ['benign'], 'valid', ['nevus']), _rows(['t'], ['malignant'], 'test', ['melanoma'])], ignore_index=True)
    public = _rows(['a', 'v', 't', 'm', 'n', 'u'], ['benign', 'benign', 'malignant', 'malignant', 'benign', 'benign'],
                   dx=[np.nan, 'nevus', np.nan, np.nan, 'nevus', np.nan])
    merged, counts = merged_table(target, public)
    assert merged.image_id.tolist() == ['a', 'b', 'c', 'v', 't', 'm', 'n'] and merged.image_id.is_unique
    assert merged.set_index('image_id').loc[['m', 'n'], 'diagnosis'].tolist() == ['melanoma', 'nevus']
    assert merged.set_index('image_id').loc[['m', 'n'], 'split'].tolist() == ['train', 'train']
    assert counts['shared_ids'] == 3 and counts['unknown_diagnosis'] == 1

def test_first_stage_drops_shared_ids():
    target = _rows(['a', 'b'], ['benign', 'malignant'], 'train', ['nevus', 'melanoma'])
    public = _rows(['a', 'b'] + [f'p{i}' for i in range(8)], ['benign', 'malignant'] * 5)
    stage, counts = first_stage_table(target, public, valid_pct=0.25)
    assert counts == dict(public=10, removed=2, kept=8, kept_benign=4, kept_malignant=4)
    assert not set(stage.image_id) & {'a', 'b'} and set(stage.split) == {'train', 'valid'}

@pytest.mark.slow
def test_real_isic2016_against_isic2017():
    if not (SHARED/'isic2016').is_dir(): pytest.skip('no shared data')
    target = add_valid_split(read_dataset(SHARED/'isic2017_256'), seed=0)
    public = read_public(SHARED/'isic2016')
    merged, counts = merged_table(target, public)
    assert counts['shared_ids'] == 749 and merged.image_id.is_unique
    stage, c1 = first_stage_table(target, public)
    assert c1['kept'] == 17 and not set(stage.image_id) & set(target.image_id)


# --- paired bootstrap ----------------------------------------------------------------------------------------------------
def test_paired_bootstrap_metric_point_values_and_ci():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 200)
    a = np.where(rng.random(200) < .8, y, rng.integers(0, 3, 200)); b = np.where(rng.random(200) < .5, y, rng.integers(0, 3, 200))
    for m, f in [('macro_f1', lambda p: f1_score(y, p, average='macro')), ('weighted_f1', lambda p: f1_score(y, p, average='weighted')),
                 ('accuracy', lambda p: accuracy_score(y, p)), ('balanced_accuracy', lambda p: balanced_accuracy_score(y, p))]:
        r = paired_bootstrap_metric(y, a, b, m, n_boot=300)
        assert np.isclose(r['a'], f(a)) and np.isclose(r['b'], f(b)) and r['ci_low'] > 0 and r['p_value'] < 0.01
    ref = paired_bootstrap_bacc(y, a, b, n_boot=300)
    assert np.isclose(paired_bootstrap_metric(y, a, b, 'balanced_accuracy', n_boot=300)['diff'], ref['bacc_diff'])


# --- the study -----------------------------------------------------------------------------------------------------------
def test_study_pairs_and_order():
    runs = pd.DataFrame([dict(config=f'{s}-{bb}-{sa}', strategy=s, backbone=bb, sampler=sa)
                         for s in ('o', 'a', 'x') for bb in ('L0', 'L1') for sa in ('stratified', 'shuffled')])
    names = {c for c, *_ in study_pairs(runs)}
    assert names == {'a - o', 'x - a', 'stratified - shuffled', 'L1 - L0'}
    assert study_runs(['o', 'a'], ['L0'], ['stratified', 'shuffled'])[:2] == [('a', 'L0', 'stratified'), ('o', 'L0', 'stratified')]

def test_run_study_is_resumable(tmp_path):
    out = tmp_path/'study'
    s1 = run_study(out=out, strategies='a,x', samplers='stratified,shuffled', smoke=True, n_boot=50)
    assert len(s1) == 4 and (out/'report.md').is_file() and (out/'differences.csv').is_file()
    preds = {p.parent.name: p.stat().st_mtime_ns for p in out.glob('runs/*/predictions.csv')}
    killed = out/'runs'/'x-tf_efficientnet_lite0-shuffled'
    (killed/'predictions.csv').unlink()                 # as if the study had been killed during this run
    s2 = run_study(out=out, strategies='a,x', samplers='stratified,shuffled', smoke=True, n_boot=50)
    again = {p.parent.name: p.stat().st_mtime_ns for p in out.glob('runs/*/predictions.csv')}
    assert {k for k in again if again[k] != preds.get(k)} == {killed.name}   # only the unfinished run was retrained
    assert len(s2) == 4
    report = (out/'report.md').read_text()
    assert 'Table IV' in report and 'a) Pre-train. ImageNet' in report and 'stratified - shuffled' in report
    pooled = pd.read_csv(out/'pooled_differences.csv')   # x - a with both samplers, stratified - shuffled with both strategies
    assert dict(zip(pooled.comparison, pooled.pairs)) == {'x - a': 2, 'stratified - shuffled': 2} and '### Pooled' in report
    each = pd.read_csv(out/'differences.csv')
    for c in ('x - a', 'stratified - shuffled'):
        assert np.isclose(pooled.query('comparison == @c and metric == "macro_f1"')['diff'].item(),
                          each.query('comparison == @c and metric == "macro_f1"')['diff'].mean())

def test_run_study_rejects_unknown_names(tmp_path):
    with pytest.raises(ValueError, match=r"unknown strategy/sampler \['b'\]"): run_study(out=tmp_path, strategies='a,b', smoke=True)
