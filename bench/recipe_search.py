"""Classifier recipe search on ISIC-2016, on VALIDATION only (issue 15): one factor at a time from a base recipe.

Usage:
  python bench/recipe_search.py run RECIPE [RECIPE ...]     # train each recipe on train, predict the carved valid split
  python bench/recipe_search.py cv RECIPE --folds 3          # stratified k-fold on the ISIC-2016 training split (out-of-fold AUC)
  python bench/recipe_search.py summarize                    # results/recipe/comparison.csv, auc.png

A RECIPE is a base name with optional overrides: `plain`, `plain:loss=focal`, `plain:lr=3e-4,epochs=12`, `default`.
Each run writes runs/recipe/<recipe>/ (history.csv, valid_preds.csv with one probability column per TTA mode, run.json).
The sealed ISIC-2016 test split is never read: only the official Training split (766 images) is in /work/shared.
Run with OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE (the CPU is shared).
"""
import argparse, json, os, sys, time
from pathlib import Path
import numpy as np, pandas as pd, torch
from fastai.vision.all import CSVLogger, set_seed
from melanet_nb.data import read_dataset, add_valid_split, melanet_dls, prepare_image, LABELS
from melanet_nb.classifier import melanet_learner, make_loss

DATA = Path('/work/shared/data/isic2016')
ROOT = Path(__file__).resolve().parents[1]
RUNS, RESULTS = ROOT/'runs'/'recipe', ROOT/'results'/'recipe'

BASES = {   # 'default': the library's classifier recipe before issue 15; 'plain': the 40-line timm fine-tune of the issue
    'default': dict(strategy='discriminative', loss='focal', lr=3e-3, wd=1e-2, epochs=4, freeze_epochs=1, aug='none',
                    sog=False, arch='tf_efficientnet_lite0', size=128, bs=16, geometry='pad', seed=42),
    'plain': dict(strategy='one_cycle', loss='ce', lr=1e-3, wd=1e-2, epochs=8, freeze_epochs=0, aug='flips',
                  sog=False, arch='tf_efficientnet_lite0', size=128, bs=16, geometry='pad', seed=42),
}
TTA_MODES = {'none': 1, 'hflip': 2, 'flips': 4, 'dihedral': 8}   # test-time augmentation: number of views averaged

def parse_recipe(spec:str) -> dict:
    "'plain:lr=3e-4,loss=focal' -> the base recipe with those fields replaced (types follow the base)."
    base, _, over = spec.partition(':')
    rec = dict(BASES[base])
    for kv in filter(None, over.split(',')):
        k, v = kv.split('=')
        if k not in rec: raise SystemExit(f"unknown recipe field {k!r}; fields: {list(rec)}")
        t = type(rec[k])
        rec[k] = (v.lower() in ('1', 'true', 'yes')) if t is bool else t(v)
    return rec

def augmentations(kind:str, seed:int=42):
    "On-the-fly training augmentation: 'none', 'flips' (h+v), 'strong' (flips, rotation, small scale and colour)."
    import albumentations as A, cv2
    if kind == 'none': return None
    flips = [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]
    if kind == 'flips': return A.Compose(flips, seed=seed)
    if kind == 'strong':
        return A.Compose(flips + [A.Affine(rotate=(-180, 180), scale=(0.9, 1.1), border_mode=cv2.BORDER_CONSTANT, fill=0, p=0.75),
                                  A.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.02, p=0.5)], seed=seed)
    raise SystemExit(f"unknown aug {kind!r}")

def shades_of_gray(img:np.ndarray, p:int=6) -> np.ndarray:
    "Shades-of-Gray colour constancy (Finlayson & Trezzi 2004): scale each channel so the image's Minkowski-p mean is grey."
    x = img.astype(np.float64)
    illum = np.power(np.mean(np.power(x, p), axis=(0, 1)), 1 / p)
    illum = illum / np.sqrt((illum ** 2).sum())
    return np.clip(x / (illum * np.sqrt(3)), 0, 255).astype(np.uint8)

def sog_paths(tbl:pd.DataFrame, side=256) -> pd.DataFrame:
    "The table with `path` pointing at Shades-of-Gray copies (padded and resized to `side` first), written once."
    from PIL import Image
    d = RUNS/f'_sog{side}'; d.mkdir(parents=True, exist_ok=True)
    new = []
    for r in tbl.itertuples():
        f = d/f'{r.image_id}.png'
        if not f.is_file():
            Image.fromarray(shades_of_gray(np.asarray(prepare_image(r.path, side)))).save(f.with_suffix('.tmp.png'))
            f.with_suffix('.tmp.png').rename(f)
        new.append(str(f))
    return tbl.assign(path=new)

def tta_views(x:torch.Tensor, n:int) -> list:
    "The first `n` of the 8 dihedral views of a batch (identity, h-flip, v-flip, both, then the transposed four)."
    base = [x, x.flip(3), x.flip(2), x.flip(2).flip(3)]
    views = base + [v.transpose(2, 3) for v in base]
    return views[:n]

def tta_probs(learn, dl) -> dict:
    "Malignant probability of every item of `dl` for each TTA mode."
    learn.model.eval()
    out = {m: [] for m in TTA_MODES}
    with torch.no_grad():
        for xb, _ in dl:
            ps = [torch.softmax(learn.model(v), -1)[:, 1] for v in tta_views(xb, 8)]
            for m, n in TTA_MODES.items(): out[m].append(torch.stack(ps[:n]).mean(0))
    return {m: torch.cat(v).double().numpy() for m, v in out.items()}

def fit(learn, rec):
    "Train with the recipe's strategy."
    lr, wd, ep = rec['lr'], rec['wd'], rec['epochs']
    if rec['strategy'] == 'discriminative':     # the library's default before issue 15 (without best-epoch selection)
        if rec['freeze_epochs']: learn.freeze(); learn.fit_one_cycle(rec['freeze_epochs'], lr, wd=wd)
        learn.unfreeze(); learn.fit_one_cycle(ep, slice(lr / 100, lr / 10), wd=wd)
    elif rec['strategy'] == 'one_cycle':        # every layer at one lr, AdamW (decoupled wd) + OneCycle
        learn.unfreeze(); learn.fit_one_cycle(ep, lr, wd=wd)
    elif rec['strategy'] == 'fine_tune':        # fastai's fine_tune: head-only epoch(s), then all layers; top lr = lr
        learn.fine_tune(ep - rec['freeze_epochs'], base_lr=2 * lr, freeze_epochs=rec['freeze_epochs'] or 1, wd=wd)
    else: raise SystemExit(f"unknown strategy {rec['strategy']!r}")

def train_and_predict(rec:dict, tbl:pd.DataFrame, out:Path) -> dict:
    "Train one recipe on the 'train' rows of `tbl`; TTA probabilities on its 'valid' rows; wall times."
    out.mkdir(parents=True, exist_ok=True)
    if rec['sog']: tbl = sog_paths(tbl)
    set_seed(rec['seed'], reproducible=True)
    dls = melanet_dls(tbl, size=rec['size'], bs=rec['bs'], albu=augmentations(rec['aug'], rec['seed']), seed=rec['seed'], geometry=rec['geometry'])
    learn = melanet_learner(dls, rec['arch'], loss_func=make_loss(rec['loss'], tbl.loc[tbl.split == 'train', 'label'], dls.vocab), path=out)
    (out/'history.csv').unlink(missing_ok=True)
    learn.add_cb(CSVLogger(out/'history.csv', append=True))
    t0, c0 = time.time(), time.process_time(); fit(learn, rec); fit_s, fit_cpu = time.time() - t0, time.process_time() - c0
    valid = tbl[tbl.split == 'valid'].reset_index(drop=True)
    t0 = time.time(); probs = tta_probs(learn, dls.valid); pred_s = time.time() - t0
    preds = pd.DataFrame(dict(image_id=valid.image_id, y=(valid.label == 'malignant').astype(int)))
    for m, p in probs.items(): preds[f'prob_{m}'] = p
    return dict(preds=preds, fit_seconds=round(fit_s, 1), fit_cpu_seconds=round(fit_cpu, 1), tta8_predict_seconds=round(pred_s, 1),
                n_train=int((tbl.split == 'train').sum()), n_valid=len(valid))

def load_table() -> pd.DataFrame:
    "ISIC-2016 training split with the carved validation split (seed 42, as `melanet run`)."
    return add_valid_split(read_dataset(DATA), seed=42)

def run(spec:str):
    rec, out = parse_recipe(spec), RUNS/spec.replace(':', '__').replace(',', '_').replace('=', '-')
    res = train_and_predict(rec, load_table(), out)
    res.pop('preds').to_csv(out/'valid_preds.csv', index=False)
    info = dict(recipe=spec, **rec, **res, threads=torch.get_num_threads(), loadavg_end=os.getloadavg(),
                finished=time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime()))
    (out/'run.json').write_text(json.dumps(info, indent=1))
    print(json.dumps(info), flush=True)

def cv(spec:str, folds:int=3):
    "Stratified k-fold over the whole ISIC-2016 training split (train + carved valid): out-of-fold probabilities."
    from sklearn.model_selection import StratifiedKFold
    rec, out = parse_recipe(spec), RUNS/('cv__' + spec.replace(':', '__').replace(',', '_').replace('=', '-'))
    df = read_dataset(DATA); df = df[df.split.isin(['train', 'valid'])].reset_index(drop=True)
    oof, times = [], []
    for k, (_, te) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=42).split(df, df.label)):
        tbl = df.assign(split='train'); tbl.loc[te, 'split'] = 'valid'
        res = train_and_predict(rec, tbl, out/f'fold{k}')
        oof.append(res['preds'].assign(fold=k)); times.append(res['fit_seconds'])
        print(f"fold {k}: {res['fit_seconds']} s", flush=True)
    pd.concat(oof, ignore_index=True).to_csv(out/'oof_preds.csv', index=False)
    (out/'run.json').write_text(json.dumps(dict(recipe=spec, folds=folds, **rec, fit_seconds=times,
                                                finished=time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())), indent=1))

def _changes(spec:str) -> str:
    base, _, over = spec.partition(':')
    return over or f'(base: {base})'

def summarize(reference='default', reference_tta='none', n_boot=2000):
    "One row per (recipe, TTA mode): valid AUC with its bootstrap CI, paired DeLong against the reference; CV rows; a plot."
    import matplotlib.pyplot as plt, seaborn as sns
    from melanet_nb.evaluation import auc_ci, delong_test
    runs = {json.loads((d/'run.json').read_text())['recipe']: d for d in sorted(RUNS.iterdir()) if (d/'valid_preds.csv').is_file()}
    ref = pd.read_csv(runs[reference]/'valid_preds.csv')
    rows = []
    for spec, d in runs.items():
        info, preds = json.loads((d/'run.json').read_text()), pd.read_csv(d/'valid_preds.csv')
        assert preds.image_id.tolist() == ref.image_id.tolist(), spec
        hist = pd.read_csv(d/'history.csv'); hist = hist[hist.epoch != 'epoch']
        for m in TTA_MODES:
            ci = auc_ci(preds.y, preds[f'prob_{m}'], n_boot=n_boot, seed=42)
            dl = delong_test(preds.y, preds[f'prob_{m}'], ref[f'prob_{reference_tta}'])
            rows.append(dict(recipe=spec, changes=_changes(spec), tta=m, valid_auc=ci['auc'], ci_low=ci['auc_ci_low'],
                             ci_high=ci['auc_ci_high'], delta_vs_default=dl['auc_diff'], delong_p=dl['p_value'],
                             best_epoch_auc=float(hist.roc_auc_score.astype(float).max()), epochs_run=len(hist),
                             fit_minutes=round(info['fit_seconds'] / 60, 2), n_train=info['n_train'], n_valid=info['n_valid'],
                             load_at_end=round(info['loadavg_end'][0], 2)))
    out = pd.DataFrame(rows)
    for d in sorted(RUNS.glob('cv__*')):
        if not (d/'oof_preds.csv').is_file(): continue
        info, oof = json.loads((d/'run.json').read_text()), pd.read_csv(d/'oof_preds.csv')
        for m in TTA_MODES:
            ci = auc_ci(oof.y, oof[f'prob_{m}'], n_boot=n_boot, seed=42)
            rows.append(dict(recipe='cv: ' + info['recipe'], changes=f"{info['folds']}-fold out-of-fold, {len(oof)} images", tta=m,
                             valid_auc=ci['auc'], ci_low=ci['auc_ci_low'], ci_high=ci['auc_ci_high'],
                             fit_minutes=round(sum(info['fit_seconds']) / 60, 2), n_valid=len(oof)))
    out = pd.DataFrame(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out.round(4).to_csv(RESULTS/'comparison.csv', index=False)
    shown = out[out.tta.isin(['none', 'flips'])].copy()
    order = shown[shown.tta == 'flips'].sort_values('valid_auc').recipe.tolist()
    label = {'default': 'default (old: discriminative, focal, no aug)', 'plain': 'plain (new default)'}
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(order) + 1.8))
    for i, (m, g) in enumerate(shown.groupby('tta', sort=False)):
        g = g.set_index('recipe').loc[order]
        y = np.arange(len(order)) + (i - 0.5) * 0.3
        ax.errorbar(g.valid_auc, y, xerr=[g.valid_auc - g.ci_low, g.ci_high - g.valid_auc], fmt='o', capsize=3,
                    color=sns.color_palette()[i], label=f'test-time augmentation: {m}')
    ax.set_yticks(np.arange(len(order)), [label.get(r, r) for r in order])
    ax.set_xlabel('ROC AUC, 95% bootstrap CI\n(valid: carved ISIC-2016 split, 154 images, 30 malignant; cv: out-of-fold on 766 images)')
    ax.set_title('Classifier recipes, one factor at a time from the plain fine-tune (Lite0, 128 px)')
    ax.legend(loc='upper left', bbox_to_anchor=(1.01, 1)); fig.tight_layout(); fig.savefig(RESULTS/'auc.png', dpi=120)
    print(out[out.tta.isin(['none', 'flips'])].round(3).to_string(index=False))
    return out

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('cmd', choices=['run', 'cv', 'summarize'])
    ap.add_argument('recipes', nargs='*')
    ap.add_argument('--folds', type=int, default=3)
    a = ap.parse_args()
    if a.cmd == 'run':
        for s in a.recipes: run(s)
    elif a.cmd == 'cv':
        for s in a.recipes: cv(s, a.folds)
    else: summarize()

if __name__ == '__main__': main()
