"""Tests of melanet_nb.segmentation and the segmentation metrics: shapes and losses by hand, post-processing, resume,
the pipeline on the demo data, predict_masks, and bad input refused by name."""
import json, shutil
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from PIL import Image

torch.set_num_threads(1)
from melanet_nb.data import DataError, PRED_COLUMNS, add_valid_split, demo_data, read_normalized, load_mask, melanet_dls
from melanet_nb.evaluation import MetricInputError, mask_scores, segmentation_scores, segmentation_summary, mean_performance
from melanet_nb.segmentation import (MODELS, TASKS, MultiTaskLoss, create_segmenter, export_segmenter, load_segmenter,
                                     load_segmenter_state, postprocess_mask, restore_mask, lesion_box, crop_to_lesion,
                                     predict_masks, run_segment, segment_learner, fit_segmenter, summarize_runs, task_alpha,
                                     _smoke_rows, class_predictions)

@pytest.fixture(scope='module')
def demo(): return demo_data(120)

@pytest.fixture(scope='module')
def smoke_run(demo, tmp_path_factory):
    out = tmp_path_factory.mktemp('seg')/'run'
    return out, run_segment(demo, out=out, task='multitask', alpha=0.8, smoke=True)

# --- metrics ---------------------------------------------------------------------------------------------------------
def test_jaccard_dice_by_hand():
    t = np.zeros((10, 10), bool); t[:, :5] = True          # 50 pixels
    p = np.zeros((10, 10), bool); p[:, 2:7] = True         # 50 pixels, 30 shared
    s = mask_scores(p, t)
    assert s['jaccard'] == pytest.approx(30 / 70) and s['dice'] == pytest.approx(60 / 100)
    assert s['thresholded_jaccard'] == 0 and s['sensitivity'] == pytest.approx(0.6) and s['specificity'] == pytest.approx(30 / 50)
    assert mask_scores(t, t)['thresholded_jaccard'] == 1.0
    assert mean_performance(0.6, 0.8) == pytest.approx(0.7)

def test_metric_inputs_refused_by_name():
    t = np.zeros((4, 4), np.uint8)
    with pytest.raises(MetricInputError, match='img7 \\(expert\\): not a binary mask'): mask_scores(t > 0, t + 7, 'img7')
    with pytest.raises(MetricInputError, match='differ in shape'): mask_scores(np.zeros((4, 5), bool), t)
    with pytest.raises(MetricInputError, match='length mismatch'): segmentation_scores([t], [t, t])

def test_summary_interval_contains_mean():
    rng = np.random.default_rng(0)
    per = pd.DataFrame(dict(jaccard=rng.uniform(0.4, 0.95, 50)))
    for c in ['thresholded_jaccard', 'dice', 'sensitivity', 'specificity', 'accuracy']: per[c] = per.jaccard
    s = segmentation_summary(per.assign(area_true=0.1, area_pred=0.1), n_boot=300)
    assert s['jaccard_ci_low'] < s['jaccard'] < s['jaccard_ci_high'] and s['n_failed'] == int((per.jaccard < 0.65).sum())

# --- models and losses -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize('name', MODELS)
def test_models_give_mask_and_classes(name):
    net = create_segmenter(name, n_classes=3, pretrained=False)
    m, c = net(torch.randn(2, 3, 32, 32))
    assert m.shape == (2, 1, 32, 32) and c.shape == (2, 3)

def test_loss_weights_tasks():
    preds = (torch.zeros(2, 1, 4, 4), torch.zeros(2, 3))
    mask, y = torch.ones(2, 4, 4, dtype=torch.long), torch.tensor([0, 2])
    assert float(MultiTaskLoss(task_alpha('seg'))(preds, mask, y)) == pytest.approx(np.log(2))
    assert float(MultiTaskLoss(task_alpha('cls'))(preds, mask, y)) == pytest.approx(np.log(3))
    assert float(MultiTaskLoss(0.25)(preds, mask, y)) == pytest.approx(0.25 * np.log(2) + 0.75 * np.log(3))
    with pytest.raises(ValueError, match='unknown task'): task_alpha('segment')

# --- post-processing and geometry -----------------------------------------------------------------------------------
def test_postprocess_keeps_one_filled_lesion():
    m = np.zeros((30, 30)); m[5:20, 5:20] = 1; m[10:13, 10:13] = 0; m[25:28, 25:28] = 1
    out = postprocess_mask(m, closing_radius=0)
    assert out[11, 11] and not out[26, 26] and out.sum() == 225

def test_restore_undoes_padding():
    prob = np.zeros((8, 8), np.float32); prob[2:6, :] = 1          # a 16 x 8 image padded to 16 x 16, at 8 px
    r = restore_mask(prob, (16, 8))
    assert r.shape == (8, 16) and (r > 0.5).all()

def test_lesion_box_and_crop():
    m = np.zeros((10, 20), bool); m[2:4, 5:9] = True
    assert lesion_box(m, 0) == (5, 2, 9, 4) and lesion_box(m, 0.25) == (4, 1, 10, 5)
    assert crop_to_lesion(Image.new('RGB', (20, 10)), m, 0).size == (4, 2)

# --- training: resume and checkpoints --------------------------------------------------------------------------------
def test_resume_and_foreign_checkpoint(demo, tmp_path):
    df = add_valid_split(_smoke_rows(read_normalized(demo), 'diagnosis', 3))
    dls = melanet_dls(df, 32, 4, target='diagnosis', with_mask=True)
    learn = segment_learner(dls, 'unet_lite0', 'seg', path=tmp_path)
    with learn.no_bar(), learn.no_logging(): fit_segmenter(learn, epochs=1)
    again = segment_learner(dls, 'unet_lite0', 'seg', path=tmp_path)
    with again.no_bar(), again.no_logging(): fit_segmenter(again, epochs=2)
    assert again.resume_epoch == 1 and len(pd.read_csv(tmp_path/'history.csv')) == 2
    with pytest.raises(DataError, match='last.pth: checkpoint of another architecture'):
        load_segmenter_state(tmp_path/'checkpoints'/'last.pth', create_segmenter('unet32'))
    with pytest.raises(DataError, match='last.pth: checkpoint of a run with other settings'):   # a multitask run may not continue a seg run
        fit_segmenter(segment_learner(dls, 'unet_lite0', 'multitask', path=tmp_path), epochs=3)

# --- the pipeline -----------------------------------------------------------------------------------------------------
def test_run_segment_writes_everything(smoke_run):
    out, m = smoke_run
    assert sorted(p.name for p in out.iterdir()) == ['config.json', 'history.csv', 'metrics.json', 'model.pth', 'per_image.csv',
                                                     'predictions.csv', 'report.md']
    assert json.loads((out/'metrics.json').read_text())['config'] == 'unet_lite0_multitask_alpha0.8'
    preds = pd.read_csv(out/'predictions.csv')
    assert list(preds.columns[:5]) == PRED_COLUMNS and {'prob_nevus', 'prob_melanoma', 'prob_seborrheic_keratosis'} <= set(preds.columns)
    per = pd.read_csv(out/'per_image.csv')
    assert set(per.postprocessed) == {True, False} and per.jaccard.between(0, 1).all()
    assert 0 <= m['mean_performance'] <= 1 and 'sign error' not in (out/'report.md').read_text()
    assert not list(out.parent.glob('.run.tmp*'))
    table = summarize_runs([out/'metrics.json'])
    assert table.alpha.tolist() == [0.8] and table.mean_performance.between(0, 100).all()

def test_predict_masks_writes_masks_overlays_table(smoke_run, demo, tmp_path):
    out, _ = smoke_run
    imgs = sorted((demo/'images').iterdir())[:3]
    table = predict_masks(out/'model.pth', imgs, tmp_path/'pred')
    assert len(table) == 3 and len(list((tmp_path/'pred'/'overlays').iterdir())) == 3
    mask = np.asarray(Image.open(tmp_path/'pred'/'masks'/f'{imgs[0].stem}.png'))
    assert mask.shape == np.asarray(Image.open(imgs[0])).shape[:2] and set(np.unique(mask)) <= {0, 255}
    table_dir = predict_masks(out/'model.pth', demo, tmp_path/'pred_all')      # a normalized dataset folder
    assert len(table_dir) == 120

def test_external_set_with_other_classes_is_scored_binary(smoke_run, demo, tmp_path):
    out, _ = smoke_run
    model, info = load_segmenter(out/'model.pth')
    rows = read_normalized(demo).head(6).assign(diagnosis='basal_cell_carcinoma', split='test')
    preds = class_predictions(rows, np.full((6, 3), 1 / 3), info['vocab'], 'x')
    assert {'prob_benign', 'prob_malignant'} <= set(preds.columns) and preds.true_class.isin(['benign', 'malignant']).all()
    assert np.allclose(preds.prob_malignant, 1 / 3)

def test_test_data_option_scores_other_folder(demo, tmp_path):
    m = run_segment(demo, out=tmp_path/'ext', test_data=demo, task='seg', smoke=True)
    assert m['evaluated_on'] == demo.name and m['n_valid'] == 0 and m['classification'] is None

# --- bad input --------------------------------------------------------------------------------------------------------
def _copy(demo, tmp_path, change):
    d = tmp_path/'data'; shutil.copytree(demo, d); change(d); return d

def test_dataset_without_masks_refused(demo, tmp_path):
    d = _copy(demo, tmp_path, lambda d: shutil.rmtree(d/'masks'))
    with pytest.raises(DataError, match='no lesion masks'): run_segment(d, out=tmp_path/'o', smoke=True)
    assert not (tmp_path/'o').exists()

def test_bad_masks_refused_by_name(demo, tmp_path):
    name = sorted((demo/'masks').iterdir())[0].name
    d = _copy(demo, tmp_path, lambda d: Image.open(d/'masks'/name).resize((9, 9)).save(d/'masks'/name))
    with pytest.raises(DataError, match=f'{name}: size 9x9 differs'): run_segment(d, out=tmp_path/'o', smoke=True)

def test_foreign_model_refused_by_name(tmp_path):
    f = tmp_path/'classifier.pkl'; torch.save({'a': torch.zeros(1)}, f)
    with pytest.raises(DataError, match='classifier.pkl: not a melanet_nb segmentation model'): load_segmenter(f)
    with pytest.raises(DataError, match='classifier.pkl: not a melanet_nb segmentation model'): predict_masks(f, [], tmp_path/'p')
    net = create_segmenter('unet32', pretrained=False)
    g = export_segmenter(net, tmp_path/'u32.pth', ['a', 'b', 'c'], 64)
    with pytest.raises(DataError, match='u32.pth: checkpoint of another architecture'): load_segmenter_state(g, create_segmenter('unet64', pretrained=False))
