"""Classifier throughput at 128 px: training and inference images/s for the default backbone and for VGG-GAP (VGG-16).

Usage: python bench/bench_classifier.py [--size 128] [--threads 2] [--vgg-batches 3] [--json out.json]

Model-level numbers use random tensors (the weights do not change the speed, so VGG-16 runs with random init when its
ImageNet weights are not available offline). `end_to_end` also times `predict` on demo images, which includes JPEG
decoding, padding and resizing. On a shared CPU set OMP_WAIT_POLICY=PASSIVE: with busy-waiting OpenMP threads and
more runnable processes than cores, two threads can be 10x slower than one.
"""
import argparse, json, os, platform, tempfile, time
import torch

def bench_model(arch, size, bs, n_batches, warmup=1):
    from melanet_nb.classifier import create_classifier, FocalLoss
    model = create_classifier(arch, pretrained=(arch != 'vgg16'))
    loss_func, opt = FocalLoss(), torch.optim.Adam(model.parameters(), 1e-4)
    x, y = torch.randn(bs, 3, size, size), torch.arange(bs) % 2
    model.train()
    for i in range(warmup + n_batches):
        if i == warmup: t0 = time.perf_counter()
        opt.zero_grad(); loss_func(model(x), y).backward(); opt.step()
    train = bs * n_batches / (time.perf_counter() - t0)
    model.eval()
    with torch.no_grad():
        for i in range(warmup + n_batches):
            if i == warmup: t0 = time.perf_counter()
            model(x)
    infer = bs * n_batches / (time.perf_counter() - t0)
    return dict(arch=arch, size=size, batch_size=bs, batches=n_batches, train_img_per_s=round(train, 2), infer_img_per_s=round(infer, 2))

def bench_predict(size, n_images=64):
    "End-to-end `predict` (decode + pad + resize + forward) with an untrained exported default classifier on demo images."
    from melanet_nb.data import demo_data, read_dataset, add_valid_split, melanet_dls
    from melanet_nb.classifier import melanet_learner, export_classifier, predict
    tbl = add_valid_split(read_dataset(demo_data()))
    learn = melanet_learner(melanet_dls(tbl, size=size, bs=16))
    pkl = export_classifier(learn, tempfile.mkdtemp()/__import__('pathlib').Path('bench.pkl'))
    paths = tbl.path.tolist()[:n_images]
    predict(pkl, paths[:4])
    t0 = time.perf_counter(); predict(pkl, paths); dt = time.perf_counter() - t0
    return dict(arch='tf_efficientnet_lite0', size=size, images=len(paths), predict_img_per_s=round(len(paths) / dt, 2))

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--size', type=int, default=128)
    ap.add_argument('--threads', type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument('--batches', type=int, default=8, help='timed batches for the default backbone')
    ap.add_argument('--vgg-batches', type=int, default=2, help='timed batches for VGG-16 (slow on CPU)')
    ap.add_argument('--bs', type=int, default=16)
    ap.add_argument('--json', default=None, help='also write the results to this file')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows = [bench_model('tf_efficientnet_lite0', a.size, a.bs, a.batches), bench_model('vgg16', a.size, a.bs, a.vgg_batches)]
    e2e = bench_predict(a.size)
    out = dict(machine=dict(cpu_count=os.cpu_count(), torch_threads=a.threads, torch=torch.__version__, platform=platform.platform(),
                            omp_wait_policy=os.environ.get('OMP_WAIT_POLICY'), loadavg=os.getloadavg()),
               models=rows, end_to_end=e2e)
    for r in rows: print(f"{r['arch']:>24} @ {r['size']} px, bs {r['batch_size']}: train {r['train_img_per_s']:7.2f} img/s, "
                         f"inference {r['infer_img_per_s']:7.2f} img/s ({r['batches']} batches)")
    print(f"{'predict() end to end':>24} @ {e2e['size']} px: {e2e['predict_img_per_s']:.2f} img/s over {e2e['images']} demo images")
    print(f"load average {os.getloadavg()}, threads {a.threads}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    if a.json: open(a.json, 'w').write(json.dumps(out, indent=1))

if __name__ == '__main__': main()
