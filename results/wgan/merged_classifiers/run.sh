#!/bin/bash
# issue 11 comparison at reduced settings (session time): baseline vs wgan on merged ISIC-2016 + ISIC-2017 train (the WGAN stage reuses runs/wgan/merged64 epoch 20)
cd /work/main
export OMP_WAIT_POLICY=PASSIVE MPLBACKEND=Agg
/usr/bin/time -v .venv/bin/melanet run --data ../shared/data/isic2016 --extra-train ../shared/data/isic2017_256 \
  --test-data ../shared/data/isic2017_256 --out runs/merged --configs baseline wgan \
  --epochs 5 --synth-n 400
