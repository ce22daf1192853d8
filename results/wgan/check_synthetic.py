"""Synthesize from the trained WGAN-GP and run `synthetic_set_checks` on its set (and on the ISIC-2016 CycleGAN set).

Held-out real melanomas: the 'valid' malignant rows of the merged table (runs/merged/data/table.csv); for the
side-by-side with the CycleGAN, the subset of them that the ISIC-2016 CycleGAN and baseline did not train on.
Classifier verdict: the ISIC-2016 baseline of `runs/isic2016` (the merged-data baseline comes from the lead's
`melanet run`), at its threshold chosen on its own validation split (sensitivity 0.9) and at 0.5.
"""
import sys, time, json
from pathlib import Path
import numpy as np, pandas as pd, torch
from melanet_nb.wgan import synthesize_wgan, export_wgan_generator
from melanet_nb.evaluation import frozen_features, synthetic_set_checks, threshold_for_sensitivity
from melanet_nb.classifier import predict_proba
from melanet_nb.data import read_normalized

torch.set_num_threads(1)
ckpt, run, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
t0, times = time.time(), {}
syn = synthesize_wgan(ckpt, run/'synthetic', n=1000, seed=42)
export_wgan_generator(ckpt, run/'wgan_generator.pth')
times['synthesize_1000'] = round(time.time() - t0, 1)

merged = pd.read_csv('runs/merged/data/table.csv')
old = pd.read_csv('runs/isic2016/data/table.csv')
train = merged[merged.split == 'train']
held = merged[(merged.split == 'valid') & (merged.label == 'malignant')]
held_unseen = held[~held.image_id.isin(set(old[old.split == 'train'].image_id))]
cyc = read_normalized('runs/isic2016/synthetic/set', source='synthetic')

t = time.time()
paths = dict(wgan=list(syn.path), cyclegan=list(cyc.path), held=list(held.path),
             benign=list(train[train.label == 'benign'].path), malignant=list(train[train.label == 'malignant'].path))
feats = {k: frozen_features(v, size=128) for k, v in paths.items()}
times['frozen_features'] = round(time.time() - t, 1)

t = time.time()
model = 'runs/isic2016/classifier/work/baseline.pkl'
preds = pd.read_csv('runs/isic2016/classifier/predictions.csv')
val = preds[(preds.config == 'baseline') & (preds.split == 'valid')]
threshold = threshold_for_sensitivity(val.y.values, val.prob_malignant.values, 0.9)
prob = {k: predict_proba(model, paths[k])[:, 1] for k in ('wgan', 'cyclegan', 'held')}
times['baseline_predictions'] = round(time.time() - t, 1)

unseen = held.image_id.isin(set(held_unseen.image_id)).to_numpy()
common = dict(real_benign=feats['benign'], real_malignant=feats['malignant'], threshold=threshold)
tables = [
    synthetic_set_checks(feats['wgan'], feats['held'], synthetic_prob=prob['wgan'], heldout_prob=prob['held'][unseen],
                         generator='wgan (held-out: all 62 valid melanomas)', **common),
    synthetic_set_checks(feats['wgan'], feats['held'][unseen], synthetic_prob=prob['wgan'], heldout_prob=prob['held'][unseen],
                         generator=f'wgan (held-out: {unseen.sum()} unseen by both)', **common),
    synthetic_set_checks(feats['cyclegan'], feats['held'][unseen], synthetic_prob=prob['cyclegan'], heldout_prob=prob['held'][unseen],
                         generator=f'melanet CycleGAN, ISIC-2016 run (held-out: {unseen.sum()} unseen by both)', **common)]
checks = pd.concat(tables, ignore_index=True)
out.mkdir(parents=True, exist_ok=True)
checks.to_csv(out/'synthetic_checks.csv', index=False)
meta = dict(checkpoint=str(ckpt), n_synthetic_wgan=len(syn), n_synthetic_cyclegan=len(cyc), n_heldout=len(held),
            n_heldout_unseen=int(unseen.sum()), n_train_benign=len(paths['benign']), n_train_malignant=len(paths['malignant']),
            baseline=model, baseline_threshold=threshold, seconds=times)
(out/'synthetic_checks.json').write_text(json.dumps(meta, indent=1))
print(checks.round(4).to_string()); print(json.dumps(meta, indent=1))
