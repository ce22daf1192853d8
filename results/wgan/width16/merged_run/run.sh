#!/bin/bash
# issue 11: the width-16 WGAN-GP (136 epochs ~ the 20-min budget of results/wgan/width16) through the classifiers,
# merged ISIC-2016 + ISIC-2017 train -> ISIC-2017 test; data stage copied from runs/merged_full (same fingerprint).
cd /work/main
export OMP_WAIT_POLICY=PASSIVE MPLBACKEND=Agg OMP_NUM_THREADS=1
date -u > runs/merged_w16/started
/usr/bin/time -v .venv/bin/melanet run --data ../shared/data/isic2016 --extra-train ../shared/data/isic2017_256 \
  --test-data ../shared/data/isic2017_256 --out runs/merged_w16 --configs baseline wgan --wgan-width 16 --wgan-epochs 136 \
  > runs/merged_w16/log.txt 2> runs/merged_w16/time.txt
echo $? > runs/merged_w16/rc; date -u > runs/merged_w16/ended
