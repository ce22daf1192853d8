"""Time a training step (forward, multi-task loss with BCE, backward, Adam) and inference of each segmentation model on random
batches: `python bench/bench_segmentation.py [--size 128] [--bs 8] [--threads 1]`."""
import argparse, time, warnings
import torch
warnings.simplefilter('ignore')
from melanet_nb.segmentation import MODELS, MultiTaskLoss, create_segmenter

def bench(name, size, bs, steps=3):
    net = create_segmenter(name, 3, pretrained=False)
    opt, loss = torch.optim.Adam(net.parameters(), 1e-3), MultiTaskLoss(0.5)
    x, mask, y = torch.randn(bs, 3, size, size), torch.randint(0, 2, (bs, size, size)), torch.randint(0, 3, (bs,))
    for i in range(steps + 1):
        if i == 1: t = time.time()
        l = loss(net(x), mask, y); opt.zero_grad(); l.backward(); opt.step()
    train = bs * steps / (time.time() - t)
    net.eval()
    with torch.no_grad():
        net(x); t = time.time()
        for _ in range(steps): net(x)
    infer = bs * steps / (time.time() - t)
    n = sum(p.numel() for p in net.parameters()) / 1e6
    return name, n, train, infer

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--size', type=int, default=128); p.add_argument('--bs', type=int, default=8); p.add_argument('--threads', type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f'| model @ {a.size} px, batch {a.bs}, {a.threads} thread(s) | parameters (M) | train (img/s) | inference (img/s) |')
    print('|---|---:|---:|---:|')
    for m in MODELS: print('| {} | {:.1f} | {:.1f} | {:.1f} |'.format(*bench(m, a.size, a.bs)))
