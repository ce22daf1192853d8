#!/usr/bin/env bash
# Install the package the way a user does, into a fresh venv that already holds the NEWEST fastai/fastcore the package
# index offers (newer than constraints.txt), and check that nothing gets downgraded and that the library, `melanet --help`,
# `melanet train/evaluate` and `melanet predict` work there. Not part of `make test` (it installs packages: ~5 min).
# Usage: bench/check_install.sh [WORK_DIR]      (prints a summary; exit status non-zero on any failure)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-$(mktemp -d)}; mkdir -p "$WORK"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} MPLBACKEND=Agg
python3 -m venv "$WORK/venv"; PY="$WORK/venv/bin/python"; PIP="$PY -m pip -q --disable-pip-version-check"
echo "== a user's environment: the newest fastai and fastcore on the index"
$PIP install torch torchvision fastai fastcore
before=$($PY -m pip freeze | grep -iE '^(torch|torchvision|fastai|fastcore)==' | sort)
echo "$before"
echo "== build the wheel and install it (no constraints, as a user would)"
rm -rf "$WORK/dist"; (cd "$ROOT" && "$PY" -m pip wheel -q --no-deps -w "$WORK/dist" .)
$PIP install "$WORK"/dist/melanet_nb-*.whl
after=$($PY -m pip freeze | grep -iE '^(torch|torchvision|fastai|fastcore)==' | sort)
if [ "$before" != "$after" ]; then echo "FAIL: installing melanet_nb changed the user's stack:"; diff <(echo "$before") <(echo "$after") || true; exit 1; fi
echo "ok: torch, torchvision, fastai and fastcore unchanged"
if $PY -c "import papermill" 2>/dev/null; then echo "FAIL: papermill installed without the [notebooks] extra"; exit 1; fi
echo "ok: notebook tools are not runtime requirements"
cd "$WORK"
$PY -c "import melanet_nb, melanet_nb.pipeline, melanet_nb.cli; print('ok: import melanet_nb', melanet_nb.__version__)"
t0=$(date +%s.%N); "$WORK/venv/bin/melanet" --help >/dev/null; t1=$(date +%s.%N)
echo "ok: melanet --help in $(echo "$t1 - $t0" | bc) s"
"$WORK/venv/bin/melanet" train --smoke --configs baseline --out run > train.log
"$WORK/venv/bin/melanet" evaluate --smoke --configs baseline --out run > evaluate.log
imgs=$($PY -c "import pandas as pd; print(' '.join(pd.read_csv('run/data/table.csv').query(\"split == 'test'\").path[:3]))")
"$WORK/venv/bin/melanet" predict --model run/classifier/work/baseline.pkl $imgs
echo "ok: train, evaluate and predict work with fastai $($PY -c 'import fastai; print(fastai.__version__)'), fastcore $($PY -c 'import fastcore; print(fastcore.__version__)')"
