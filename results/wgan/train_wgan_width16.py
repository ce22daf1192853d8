"""Issue 11 follow-up: the same 20-minute budget, a WGAN-GP 2.8x cheaper per critic step (width 16 for generator and
critic instead of 32), so that it takes ~3x more generator steps. Trains on the merged training split until the
time limit (checked after each epoch), draws as many images as the pipeline's wgan config did (synth_n 'balance'),
and runs the same synthetic_set_checks as `melanet run` against the merged run's held-out melanomas."""
import sys, time, json, os
from pathlib import Path
import pandas as pd, torch
from fastai.basics import Callback, CancelFitException
from melanet_nb.wgan import train_wgan, losses_table, synthesize_wgan
from melanet_nb.evaluation import synthetic_set_checks
from melanet_nb.classifier import predict_proba, load_classifier
from melanet_nb.data import malignant_probability, prob_columns, prediction_vocab
from melanet_nb.evaluation import threshold_for_sensitivity

run, limit = Path('runs/wgan/merged64_w16'), float(sys.argv[1]) * 60   # usage: python results/wgan/train_wgan_width16.py MINUTES
torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', 1)))
table = pd.read_csv('runs/merged_full/data/table.csv')
t0 = time.time()
class TimeLimit(Callback):
    order = 100   # last: after the epoch's checkpoint is written
    def after_epoch(self):
        if time.time() - t0 > limit: raise CancelFitException()
learn = train_wgan(table, run/'ckpt', size=64, epochs=200, bs=32, width=16, critic_width=16, seed=42, ckpt_every=1,
                   sample_every=10, cbs=[TimeLimit()])
hist = losses_table(learn)
train_s = round(time.time() - t0, 1)
hist.to_csv(run/'losses.csv', index=False)
n = len(pd.read_csv('runs/merged_full/wgan_synthetic/set/labels.csv'))   # as many as the pipeline's wgan config drew
syn = synthesize_wgan(learn, run/'synthetic', n=n, seed=42)
real = lambda split, label: list(table.query(f"split == '{split}' and label == '{label}'").path)
preds = pd.read_csv('runs/merged_full/classifier/predictions.csv', dtype={'image_id': str}).query("config == 'baseline' and split == 'valid'")
vocab = prediction_vocab(preds)
p_valid = malignant_probability(preds[prob_columns(vocab)].values, vocab)
held = preds.true_class.values == 'malignant'
verdicts = dict(threshold=threshold_for_sensitivity(held.astype(int), p_valid, 0.9), heldout_prob=p_valid[held])
models = json.loads(Path('runs/merged_full/classifier/stage.json').read_text())['models']
baseline = load_classifier(Path('runs/merged_full')/models/'baseline.pkl')
prob = malignant_probability(predict_proba(baseline, list(syn.path)), baseline.dls.vocab)
checks = synthetic_set_checks(list(syn.path), real('valid', 'malignant'), real_benign=real('train', 'benign'),
                              real_malignant=real('train', 'malignant'), generator='wgan width 16', size=128, seed=42,
                              synthetic_prob=prob, **verdicts)
checks.to_csv(run/'synthetic_checks.csv', index=False)
meta = dict(train_seconds=train_s, epochs=len(hist), critic_steps=int(hist.critic_steps.sum()),
            generator_steps=int(hist.generator_steps.sum()), n_synthetic=n, total_seconds=round(time.time() - t0, 1))
(run/'meta.json').write_text(json.dumps(meta, indent=1))
print(checks.round(4).to_string()); print(json.dumps(meta, indent=1))
