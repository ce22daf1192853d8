"""Benchmark of CycleGAN training: iterations/s and peak memory at 64/128/256 px for the default generator width,
plus a profile of one training step. Each size runs in its own process so that peak RSS (ru_maxrss) is per size.
`--versus` times the junyanz reference training step (bench/ref_cyclegan.py) against the project's Learner path in one
process, interleaved; `--real DIR` times `train_cyclegan` itself on a dataset's balanced domains.

    .venv/bin/python bench/bench_cyclegan.py                 # all sizes + profile, prints a markdown table
    .venv/bin/python bench/bench_cyclegan.py --sizes 64 --no-profile
    .venv/bin/python bench/bench_cyclegan.py --study --sizes 128      # threads x batch x loader workers, alternating
    .venv/bin/python bench/bench_cyclegan.py --versus --sizes 128 --block 3 --rounds 6 --variants reference serial parallel
    .venv/bin/python bench/bench_cyclegan.py --real ../shared/data/isic2016 --sizes 128 --steps 30 --variants before parallel --before DIR
Figures measured with it, and the exact commands, are in bench/README.md.
Threads: torch's default (all cores) unless OMP_NUM_THREADS / --threads says otherwise."""
import argparse, json, os, platform, resource, subprocess, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # ref_cyclegan


def run_one(size, iters, warmup, threads, opt, disc_width=None):
    "Time `iters` training iterations (after `warmup`) at `size` px through the real Learner + callback path."
    import torch
    from fastai.basics import DataLoaders, DataLoader, Callback, CancelFitException
    from melanet_nb.cyclegan import CycleGAN, UnpairedImages, cyclegan_learner
    if threads: torch.set_num_threads(threads)
    rss_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # torch + fastai + melanet_nb loaded
    g = torch.Generator().manual_seed(0)
    n = warmup + iters
    benign = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    malignant = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    model = CycleGAN(size=size, disc_width=disc_width)            # default generator width (32), PatchGAN 3 layers
    dls = DataLoaders(DataLoader(UnpairedImages(benign, malignant), bs=1),
                      DataLoader(UnpairedImages(benign[:0], malignant[:0]), bs=1))
    learn = cyclegan_learner(model, dls)
    if opt == 'torch':
        from functools import partial
        from fastai.optimizer import OptimWrapper
        learn.opt_func = partial(OptimWrapper, opt=torch.optim.Adam, betas=(0.5, 0.999), eps=1e-8, weight_decay=0.)

    class Timer(Callback):
        order = 100
        def before_batch(self):
            if self.iter == warmup: self.t0 = time.perf_counter()
        def after_batch(self):
            if self.iter == n - 1: self.learn.elapsed = time.perf_counter() - self.t0

    with learn.no_bar(), learn.no_logging(): learn.fit(1, cbs=Timer())
    return dict(size=size, iters=iters, threads=torch.get_num_threads(), opt=opt, width=model.width, disc_width=model.disc_width,
                it_per_s=iters / learn.elapsed, s_per_it=learn.elapsed / iters,
                peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, rss_after_imports_mb=rss_imports,
                params_generators=sum(p.numel() for p in model.generators.parameters()),
                params_discriminators=sum(p.numel() for p in model.discriminators.parameters()))


def profile_step(size=64, threads=None, top=15):
    "torch.profiler table of a few training steps at `size` px (self CPU time per op)."
    import torch
    from torch.profiler import profile, ProfilerActivity
    from fastai.basics import DataLoaders, DataLoader
    from melanet_nb.cyclegan import CycleGAN, UnpairedImages, cyclegan_learner
    if threads: torch.set_num_threads(threads)
    imgs = torch.randint(0, 256, (4, 3, size, size), dtype=torch.uint8)
    learn = cyclegan_learner(CycleGAN(size=size), DataLoaders(DataLoader(UnpairedImages(imgs, imgs), bs=1),
                                                               DataLoader(UnpairedImages(imgs[:0], imgs[:0]), bs=1)))
    with learn.no_bar(), learn.no_logging():
        learn.fit(1)   # warm-up epoch
        with profile(activities=[ProfilerActivity.CPU]) as prof: learn.fit(1)
    return prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=top)


def threads_study(size=128, steps=6, rounds=4, width=32):
    """Alternate configurations in one process (threads x batch size x loader workers), `rounds` times each, so that a
    busy shared CPU affects them alike. Each round of a configuration is one epoch of `steps` training steps."""
    import itertools, psutil, torch
    from fastai.basics import DataLoaders, DataLoader
    from melanet_nb.cyclegan import CycleGAN, UnpairedImages, cyclegan_learner
    proc = psutil.Process()
    def cpu_s():
        "CPU seconds of this process and its (loader worker) children."
        t = proc.cpu_times(); kids = 0.
        for c in proc.children(recursive=True):
            try: kids += sum(c.cpu_times()[:2])
            except psutil.Error: pass
        return t.user + t.system + kids
    configs = list(itertools.product((1, 2), (1, 2), (0, 1)))   # (threads, bs, num_workers)
    learners = {}
    for threads, bs, workers in configs:
        if (bs, workers) in learners: continue
        g = torch.Generator().manual_seed(0)
        imgs = torch.randint(0, 256, (2, steps * bs, 3, size, size), dtype=torch.uint8, generator=g)
        ds = UnpairedImages(imgs[0], imgs[1])
        dls = DataLoaders(DataLoader(ds, bs=bs, num_workers=workers, persistent_workers=workers > 0),
                          DataLoader(UnpairedImages(imgs[0][:0], imgs[1][:0]), bs=bs))
        torch.manual_seed(0)
        learners[(bs, workers)] = cyclegan_learner(CycleGAN(size=size, width=width), dls)
    rows = []
    for r in range(rounds + 1):   # round 0 warms up every configuration and is not counted
        for threads, bs, workers in (configs if r % 2 else configs[::-1]):
            torch.set_num_threads(threads)
            learn = learners[(bs, workers)]
            c0, t0 = cpu_s(), time.perf_counter()
            with learn.no_bar(), learn.no_logging(): learn.fit(1)
            wall, cpu = time.perf_counter() - t0, cpu_s() - c0
            if r: rows.append(dict(threads=threads, bs=bs, workers=workers, round=r, s_per_step=wall / steps,
                                   s_per_image=wall / (steps * bs), cpu_pct=100 * cpu / wall))
            print(rows[-1] if r else f'warm-up {threads, bs, workers}: {wall / steps:.2f} s/step', file=sys.stderr, flush=True)
    import pandas as pd
    df = pd.DataFrame(rows)
    agg = df.groupby(['threads', 'bs', 'workers']).agg(s_per_step=('s_per_step', 'median'), s_per_image=('s_per_image', 'median'),
                                                       s_per_image_min=('s_per_image', 'min'), s_per_image_max=('s_per_image', 'max'),
                                                       cpu_pct=('cpu_pct', 'median')).reset_index()
    print(f"\nCycleGAN step at {size} px, width {width}, {steps} steps per epoch, median of {rounds} alternating rounds; "
          f"{os.cpu_count()} cores, torch {torch.__version__}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
          f"load average {os.getloadavg()[0]:.2f}, {time.strftime('%Y-%m-%d %H:%M')} UTC\n")
    print('| threads | batch | loader workers | s/step | s/image (min–max) | CPU % |\n|---:|---:|---:|---:|---:|---:|')
    for a in agg.itertuples():
        print(f"| {a.threads} | {a.bs} | {a.workers} | {a.s_per_step:.2f} | {a.s_per_image:.2f} ({a.s_per_image_min:.2f}–"
              f"{a.s_per_image_max:.2f}) | {a.cpu_pct:.0f} |")
    return agg


def project_learner(size, steps, nets='reference', parallel=None, seed=0, lib='melanet_nb'):
    "The project's training path (`cyclegan_learner` + the lr schedule of `train_cyclegan`) over `steps` random pairs."
    import importlib, torch
    from fastai.basics import DataLoaders, DataLoader
    from fastai.callback.schedule import ParamScheduler, SchedNo, SchedLin, combine_scheds
    cg = importlib.import_module(f'{lib}.cyclegan')
    CycleGAN, UnpairedImages, cyclegan_learner = cg.CycleGAN, cg.UnpairedImages, cg.cyclegan_learner
    g = torch.Generator().manual_seed(seed)
    benign, malignant = torch.randint(0, 256, (2, steps, 3, size, size), dtype=torch.uint8, generator=g)
    torch.manual_seed(seed)
    kw = {} if parallel is None else dict(parallel=parallel)   # the code before issue 15 has no `parallel`
    if nets == 'reference':   # the reference's networks in the project's CycleGAN container
        from ref_cyclegan import reference_networks
        model = CycleGAN(size=size, width=32, disc_width=64, **kw)
        model.benign_to_malignant, model.malignant_to_benign, model.disc_malignant, model.disc_benign = reference_networks()
    else: model = CycleGAN(size=size, width=32, disc_width=None if nets == 'project' else int(nets), **kw)
    dls = DataLoaders(DataLoader(UnpairedImages(benign, malignant), bs=1),
                      DataLoader(UnpairedImages(benign[:0], malignant[:0]), bs=1))
    learn = cyclegan_learner(model, dls)
    learn.sched = ParamScheduler({'lr': combine_scheds([0.5, 0.5], [SchedNo(2e-4, 2e-4), SchedLin(2e-4, 0.)])})
    return learn


def versus(size=128, block=5, rounds=6, threads=None, nets='reference', variants=('reference', 'serial', 'parallel')):
    """The reference step and the project's path in ONE process, interleaved: each round runs a block of `block` steps
    of every variant (the order reverses every round); round 0 is a warm-up and is not counted. A project block is one
    `fit` of one epoch through the real Learner + callbacks; the clock runs from its first batch to its last."""
    import psutil, torch
    from fastai.basics import Callback
    from ref_cyclegan import ReferenceCycleGAN, reference_networks
    if threads: torch.set_num_threads(threads)
    proc = psutil.Process()
    cpu = lambda: sum(proc.cpu_times()[:2])
    g = torch.Generator().manual_seed(1)
    ref_imgs = torch.randint(0, 256, (2, block, 1, 3, size, size), dtype=torch.uint8, generator=g)
    torch.manual_seed(0)
    ref = ReferenceCycleGAN(reference_networks())
    par = dict(serial=False, parallel=True, auto=None, before=None)
    learners = {v: project_learner(size, block, nets, par[v], lib='melanet_nb_before' if v == 'before' else 'melanet_nb')
                for v in variants if v != 'reference'}

    class Clock(Callback):
        order = 100
        def before_batch(self):
            if self.iter == 0: self.c0, self.t0 = cpu(), time.perf_counter()
        def after_batch(self):
            if self.iter == block - 1: self.wall_s, self.cpu_s = time.perf_counter() - self.t0, cpu() - self.c0

    def run(v):
        if v == 'reference':
            c0, t0 = cpu(), time.perf_counter()
            for i in range(block):   # the reference's data path: uint8 -> float in [-1, 1] per step (its Normalize)
                ref.optimize_parameters(ref_imgs[0, i].float().div(127.5).sub(1.), ref_imgs[1, i].float().div(127.5).sub(1.))
            return time.perf_counter() - t0, cpu() - c0
        learn, clock = learners[v], Clock()
        with learn.no_bar(), learn.no_logging(): learn.fit(1, cbs=[learn.sched, clock])
        return clock.wall_s, clock.cpu_s

    times, cpus, loads = {v: [] for v in variants}, {v: [] for v in variants}, []
    for r in range(rounds + 1):
        for v in (variants if r % 2 else variants[::-1]):
            wall, c = run(v)
            if r: times[v].append(wall / block); cpus[v].append(100 * c / wall)
        loads.append(os.getloadavg()[0])
        if r: print(f"round {r}: " + ', '.join(f"{v} {times[v][-1]:.3f} s/step ({cpus[v][-1]:.0f}% CPU)" for v in variants)
                    + f", load {loads[-1]:.2f}", file=sys.stderr, flush=True)
    return times, cpus, loads, learners, ref


def report_versus(size, block, rounds, threads, nets, variants):
    import numpy as np, torch
    times, cpus, loads, learners, ref = versus(size, block, rounds, threads, nets, variants)
    n = lambda m: sum(p.numel() for p in m.parameters()) / 1e6
    m = next(iter(learners.values())).model if learners else None
    print(f"\nCycleGAN training step at {size} px, batch 1, one process, {rounds} interleaved rounds of {block} steps per "
          f"variant (after one warm-up round)"
          + (f"; reference G pair {n(ref.netG_A) + n(ref.netG_B):.2f} M, D pair {n(ref.netD_A) + n(ref.netD_B):.2f} M "
             "parameters" if 'reference' in variants else '')
          + (f"; project networks: {nets} (G pair {n(m.generators):.2f} M, D pair {n(m.discriminators):.2f} M)" if m else '')
          + f"; torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s), OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY')}, {os.cpu_count()} cores, load average {min(loads):.2f}–{max(loads):.2f}, "
          f"{time.strftime('%Y-%m-%d %H:%M')} UTC\n")
    print(f'| path | steps/s (median) | min–max | s/step (median) | CPU % (median; 100 = one core) | × {variants[0]} (median of rounds, min–max) |')
    print('|---|---:|---:|---:|---:|---:|')
    for v in variants:
        sps, ratio = 1 / np.array(times[v]), np.array(times[variants[0]]) / np.array(times[v])   # per round
        print(f"| {v} | {np.median(sps):.2f} | {sps.min():.2f}–{sps.max():.2f} | {np.median(times[v]):.3f} | "
              f"{np.median(cpus[v]):.0f} | {np.median(ratio):.2f} ({np.min(ratio):.2f}–{np.max(ratio):.2f}) |")

def real_data(data, size=128, steps=30, warmup=3, rounds=2, variants=('before', 'after')):
    """`train_cyclegan` itself on a real dataset's balanced training domains (as `melanet run` builds them), stopped after
    `steps` steps; variants alternate `rounds` times. Times the steps after `warmup` (the stage's per-epoch cost is
    iterations x s/step) and the whole call (decoding the domains included)."""
    import importlib, numpy as np, torch
    from fastai.basics import Callback, CancelFitException
    from fastai.basics import defaults
    from fastai.callback.progress import ProgressCallback
    from melanet_nb.data import read_dataset, add_valid_split, balanced_domains
    defaults.callbacks = [c for c in defaults.callbacks if c is not ProgressCallback]   # no progress bars in the output
    df = add_valid_split(read_dataset(data))
    benign, malignant = balanced_domains(df, 42)
    res = {v: [] for v in variants}
    class Stop(Callback):
        order = 100
        def before_batch(self):
            if self.iter == warmup: self.t0 = time.perf_counter()
        def after_batch(self):
            if self.iter == steps - 1: self.learn.step_s = (time.perf_counter() - self.t0) / (steps - warmup); raise CancelFitException()
    for r in range(rounds):
        for v in (variants if r % 2 == 0 else variants[::-1]):
            cg = importlib.import_module('melanet_nb_before.cyclegan' if v == 'before' else 'melanet_nb.cyclegan')
            kw = {'parallel': {'serial': False, 'parallel': True}[v]} if v in ('serial', 'parallel') else {}
            t0 = time.perf_counter()
            learn = cg.train_cyclegan(benign, malignant, size=size, epochs=1, cbs=Stop(), **kw)
            res[v].append(learn.step_s)
            print(f"{v}: {learn.step_s:.3f} s/step, {len(learn.dls.train)} iterations per epoch, call {time.perf_counter() - t0:.0f} s, "
                  f"load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
    n = len(learn.dls.train)
    print(f"\n{data}: {len(benign)} + {len(malignant)} training images per domain, {n} iterations per epoch at {size} px; "
          f"{torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}, {time.strftime('%Y-%m-%d %H:%M')} UTC\n")
    print('| code | s/step (median of rounds) | minutes per epoch | minutes for 30 epochs |\n|---|---:|---:|---:|')
    for v, t in res.items():
        m = float(np.median(t))
        print(f"| {v} | {m:.3f} | {n * m / 60:.2f} | {30 * n * m / 60:.1f} |")

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--sizes', type=int, nargs='+', default=[64, 128, 256])
    ap.add_argument('--threads', type=int, default=None)
    ap.add_argument('--opt', choices=['fastai', 'torch'], default='fastai')
    ap.add_argument('--disc-width', type=int, default=None, help='default: same as the generator width')
    ap.add_argument('--no-profile', action='store_true')
    ap.add_argument('--one', type=int, help=argparse.SUPPRESS)
    ap.add_argument('--study', action='store_true', help='threads x batch x loader workers, alternating, at --sizes[0] px')
    ap.add_argument('--steps', type=int, default=6, help='--study: steps per epoch')
    ap.add_argument('--rounds', type=int, default=4, help='--study: alternating rounds')
    ap.add_argument('--real', help='a dataset folder: time train_cyclegan on its balanced domains for --steps steps per variant')
    ap.add_argument('--versus', action='store_true', help='reference step vs the project path, interleaved, at --sizes[0] px')
    ap.add_argument('--block', type=int, default=5, help='--versus: steps per block')
    ap.add_argument('--variants', nargs='+', default=['reference', 'serial', 'parallel'],
                    help="--versus: 'reference', and the project path with 'serial', 'parallel' or 'auto' directions "
                         "('before': the library of an older commit, copied as package `melanet_nb_before` into --before)")
    ap.add_argument('--before', help="--versus: folder holding an older melanet_nb renamed melanet_nb_before, e.g. made with "
                    "`git archive e0776b8 melanet_nb | tar -x -C DIR && mv DIR/melanet_nb DIR/melanet_nb_before`")
    ap.add_argument('--nets', default='reference', help="--versus: networks in the project path: 'reference', 'project' or a PatchGAN width")
    a = ap.parse_args()
    if a.before: sys.path.insert(0, a.before)
    if a.real: real_data(a.real, a.sizes[0], a.steps, 3, a.rounds, tuple(v for v in a.variants if v != 'reference')); return
    if a.versus: report_versus(a.sizes[0], a.block, a.rounds, a.threads, a.nets, tuple(a.variants)); return
    if a.study: threads_study(a.sizes[0], a.steps, a.rounds); return
    iters = {64: 10, 128: 6, 256: 3}
    if a.one:
        print(json.dumps(run_one(a.one, iters.get(a.one, 4), 2, a.threads, a.opt, a.disc_width))); return
    rows = []
    for s in a.sizes:
        cmd = [sys.executable, __file__, '--one', str(s), '--opt', a.opt] + (['--disc-width', str(a.disc_width)] if a.disc_width else []) + (['--threads', str(a.threads)] if a.threads else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out)); print(rows[-1], file=sys.stderr)
    import torch
    print(f"\nCycleGAN training, bs=1, width={rows[0]['width']} (G: {rows[0]['params_generators']/1e6:.2f} M params for both), "
          f"PatchGAN width {rows[0]['disc_width']} (D: {rows[0]['params_discriminators']/1e6:.2f} M), {a.opt} Adam; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{rows[0]['threads']} thread(s), {time.strftime('%Y-%m-%d %H:%M')}\n")
    print('| size (px) | iterations/s | s/iteration | peak RSS (MB) | of which after imports (MB) |\n|---:|---:|---:|---:|---:|')
    for r in rows: print(f"| {r['size']} | {r['it_per_s']:.2f} | {r['s_per_it']:.2f} | {r['peak_rss_mb']:.0f} | {r['rss_after_imports_mb']:.0f} |")
    if not a.no_profile: print('\nProfile of one epoch of 4 steps at 64 px:\n' + profile_step(64, a.threads))


if __name__ == '__main__': main()
