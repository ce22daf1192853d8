"Train the WGAN-GP on the training split of the merged ISIC-2016 + ISIC-2017 table (`melanet data ... --out runs/merged`)."
import sys, time, json, os
import pandas as pd, torch
from melanet_nb.wgan import train_wgan, losses_table

table, ckpt_dir, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', 1)))
df = pd.read_csv(table)
t0 = time.time()
learn = train_wgan(df, ckpt_dir, size=64, epochs=epochs, bs=32, width=32, seed=42, ckpt_every=1, sample_every=5)
hist = losses_table(learn)
print(json.dumps(dict(seconds=round(time.time() - t0, 1), epochs=len(hist), critic_steps=int(hist.critic_steps.sum()),
                      generator_steps=int(hist.generator_steps.sum()), checkpoint=str(learn.checkpoint))))
