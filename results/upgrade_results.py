"Add the issue-9 evaluation files (calibration) to committed binary results, from their own predictions; upgrade predictions.csv to the new contract."
import json, sys, tempfile, shutil
from pathlib import Path
import pandas as pd
from melanet_nb.evaluation import write_evaluation, check_predictions
from melanet_nb.data import write_csv_atomic
for folder in sys.argv[1:]:
    d = Path(folder)
    preds = pd.read_csv(d/'predictions.csv', dtype={'image_id': str})
    old = json.loads((d/'metrics.json').read_text())
    tmp = Path(tempfile.mkdtemp())
    ref = 'baseline' if 'baseline' in set(preds.config) else None
    files = write_evaluation(preds, tmp, reference=ref, target_sensitivity=old['settings']['target_sensitivity'],
                             n_boot=old['settings']['n_boot'], seed=old['settings']['seed'], dataset=pd.read_csv(d/"paper_comparison.csv").source.iloc[-1])
    for name in ['results.csv', 'paired_tests.csv', 'paper_comparison.csv']:
        a, b = pd.read_csv(d/name), pd.read_csv(tmp/name)
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9)   # binary numbers unchanged
    for name in ['calibration.csv', 'reliability.png']: shutil.copy(tmp/name, d/name)
    new = json.loads((tmp/'metrics.json').read_text())
    old['settings'].update({k: v for k, v in new['settings'].items() if k not in old['settings']})
    old['calibration'] = new['calibration']
    (d/'metrics.json').write_text(json.dumps(old, indent=2))
    up = check_predictions(preds)
    write_csv_atomic(up, d/'predictions.csv')
    print(d, 'ok', list(up.columns))
