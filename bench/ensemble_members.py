"""Each member of a seed ensemble scored alone, beside the ensemble, on the splits of a `melanet run --seeds N` folder.

    .venv/bin/python bench/ensemble_members.py runs/seeds/isic2016_s2 [--out results/isic2016/seeds2/members.csv]

For every configuration the run trained, the script loads the exported ensemble (`classifier/work/<config>.pkl`), predicts
the run's validation and test rows with each member alone (the same TTA), and writes one row per (config, member or
'ensemble', split): AUC with its bootstrap CI, and DeLong of the ensemble against each member on the same images.
It trains nothing and reads only the run folder, so it can score a sealed test set the same way.
"""
import argparse, json
from pathlib import Path
import pandas as pd
from melanet_nb.classifier import load_classifier, predictions_table, SeedEnsemble
from melanet_nb.evaluation import auc_ci, delong_test
from melanet_nb.data import write_csv_atomic


def member_predictions(pkl: Path, table: pd.DataFrame, config: str) -> dict:
    "{'member 0': predictions, ..., 'ensemble': predictions} of one exported ensemble on the table's valid and test rows."
    learn = load_classifier(pkl)
    if not isinstance(learn.model, SeedEnsemble): raise SystemExit(f"{pkl}: not a seed ensemble (trained without --seeds)")
    ensemble, out = learn.model, {'ensemble': predictions_table(learn, table, config)}
    for i, member in enumerate(ensemble.members):   # the same learner (data pipeline, TTA), one member at a time
        learn.model = member
        out[f'member {i}'] = predictions_table(learn, table, config)
    learn.model = ensemble
    return out


def score(preds: dict, config: str, seed: int) -> list:
    "One row per (model, split): AUC, its CI, and DeLong ensemble - member."
    rows = []
    for split in ('valid', 'test'):
        ens = preds['ensemble'].query('split == @split')
        for name, p in preds.items():
            d = p.query('split == @split')
            assert d.image_id.tolist() == ens.image_id.tolist()
            ci = auc_ci(d.y, d.prob_malignant, n_boot=2000, seed=42)
            row = dict(config=config, model=name, seed=None if name == 'ensemble' else seed + int(name.split()[1]), split=split,
                       n=len(d), auc=ci['auc'], auc_ci_low=ci['auc_ci_low'], auc_ci_high=ci['auc_ci_high'])
            if name != 'ensemble':
                dl = delong_test(ens.y, ens.prob_malignant, d.prob_malignant)
                row.update(ensemble_minus_member=dl['auc_diff'], delong_ci_low=dl['ci_low'], delong_ci_high=dl['ci_high'], delong_p=dl['p_value'])
            rows.append(row)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('run', type=Path, help='a `melanet run --seeds N` folder')
    ap.add_argument('--out', type=Path, help='CSV to write (default: <run>/ensemble_members.csv)')
    a = ap.parse_args()
    cfg = json.loads((a.run/'config.json').read_text())
    table = pd.read_csv(a.run/'data'/'table.csv', dtype={'image_id': str})
    rows = []
    for config in cfg['configs']:
        rows += score(member_predictions(a.run/'classifier'/'work'/f'{config}.pkl', table, config), config, cfg['seed'])
    out = pd.DataFrame(rows)
    write_csv_atomic(out, a.out or a.run/'ensemble_members.csv')
    print(out.round(4).to_string(index=False))


if __name__ == '__main__': main()
