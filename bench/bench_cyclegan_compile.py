"""Two more ways to speed up the CycleGAN step on this CPU, tried on the reference networks (issue 15): channels-last
memory layout and `torch.compile` (inductor). One generator + one PatchGAN, forward and backward, 128 px, batch 1.

Usage:
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/bench_cyclegan_compile.py [--threads 1] [--rounds 3] [--steps 6]

Each round times `--steps` steps of eager (contiguous), channels-last and compiled, alternating, after one warm-up
step each; the compile time (the first call) is printed apart. The figures are in bench/README.md.
"""
import argparse, sys, time
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).parent))
from ref_cyclegan import reference_networks

def step(gen, disc, x):
    "One generator forward, its PatchGAN, an L1 term and the backward pass: the bulk of a CycleGAN step."
    y = gen(x); (disc(y).mean() + (y - x).abs().mean()).backward()

def seconds_per_step(gen, disc, x, steps):
    step(gen, disc, x)   # warm-up
    t = time.perf_counter()
    for _ in range(steps): step(gen, disc, x)
    return (time.perf_counter() - t) / steps

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--threads', type=int, default=1); ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--steps', type=int, default=6); ap.add_argument('--size', type=int, default=128)
    a = ap.parse_args()
    torch.set_num_threads(a.threads); torch.manual_seed(0)
    gen, _, disc, _ = reference_networks()
    x = torch.randn(1, 3, a.size, a.size)
    t0 = time.perf_counter(); cgen, cdisc = torch.compile(gen), torch.compile(disc); step(cgen, cdisc, x)
    print(f"torch.compile: first call (compilation) {time.perf_counter() - t0:.0f} s", flush=True)
    print("| round | eager s/step | channels-last s/step | compiled s/step | eager / channels-last | eager / compiled |")
    print("|---|---|---|---|---|---|")
    for r in range(a.rounds):
        eager = seconds_per_step(gen, disc, x, a.steps)
        last = seconds_per_step(gen.to(memory_format=torch.channels_last), disc.to(memory_format=torch.channels_last),
                                x.to(memory_format=torch.channels_last), a.steps)
        gen, disc = gen.to(memory_format=torch.contiguous_format), disc.to(memory_format=torch.contiguous_format)
        comp = seconds_per_step(cgen, cdisc, x, a.steps)
        print(f"| {r + 1} | {eager:.3f} | {last:.3f} | {comp:.3f} | {eager / last:.2f} | {eager / comp:.2f} |", flush=True)

if __name__ == '__main__': main()
