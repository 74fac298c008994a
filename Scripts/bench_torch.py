#!/usr/bin/env python3
"""Time PyTorch (CPU) conv2d on every distinct convolution shape of ResNet-50.

    /tmp/torchenv/bin/python Scripts/bench_torch.py [--batches 1,16] [--repeats 5]
        [--threads 2] [--json] [--quick] [--only ID,ID] [--passes P,P] [--layouts L,L]

Three passes per shape: "forward", "backward_data" (grad wrt input only) and
"backward_weights" (grad wrt weight only), each in the "nchw" and
"channels_last" layouts. Bias is never used. Backward passes call
aten::convolution_backward directly (the kernel autograd dispatches to) with
an output mask selecting one gradient, so no autograd overhead is timed.

Timing: 2 warm-up calls, then --repeats timed repeats; a repeat is one call, or,
if one call takes < 20 ms, a loop of enough calls to reach ~20 ms divided by
the loop length. Reported: median/min/max over repeats. Layouts are
interleaved repeat by repeat so that machine noise hits both equally.

With --json one object per line:
  {"id","batch","pass","layout","ms_median","ms_min","ms_max","gflops","threads"}
gflops = 2*N*Cout*Ho*Wo*Cin*k*k / ms / 1e6 (computed from the median).
"""
import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F

# (cin, cout, k, stride, pad, h) -- ResNet-50 (timm/torchvision, 224x224 input)
SHAPES = [
    (3, 64, 7, 2, 3, 224),      # stem
    # layer1
    (64, 64, 1, 1, 0, 56),
    (64, 64, 3, 1, 1, 56),
    (64, 256, 1, 1, 0, 56),
    (256, 64, 1, 1, 0, 56),
    # layer2
    (256, 128, 1, 1, 0, 56),
    (128, 128, 3, 2, 1, 56),
    (128, 512, 1, 1, 0, 28),
    (256, 512, 1, 2, 0, 56),    # downsample
    (512, 128, 1, 1, 0, 28),
    (128, 128, 3, 1, 1, 28),
    # layer3
    (512, 256, 1, 1, 0, 28),
    (256, 256, 3, 2, 1, 28),
    (256, 1024, 1, 1, 0, 14),
    (512, 1024, 1, 2, 0, 28),   # downsample
    (1024, 256, 1, 1, 0, 14),
    (256, 256, 3, 1, 1, 14),
    # layer4
    (1024, 512, 1, 1, 0, 14),
    (512, 512, 3, 2, 1, 14),
    (512, 2048, 1, 1, 0, 7),
    (1024, 2048, 1, 2, 0, 14),  # downsample
    (2048, 512, 1, 1, 0, 7),
    (512, 512, 3, 1, 1, 7),
]

PASSES = ["forward", "backward_data", "backward_weights"]
LAYOUTS = ["nchw", "channels_last"]
MIN_TIMED_S = 0.020


def shape_id(cin, cout, k, s, p, h):
    return f"{cin}x{h}-{cout}-k{k}s{s}"


def out_size(h, k, s, p):
    return (h + 2 * p - k) // s + 1


def make_call(pass_, layout, n, cin, cout, k, s, p, h):
    """Return a zero-argument callable that runs one pass once."""
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    ho = out_size(h, k, s, p)
    x = torch.randn(n, cin, h, h).to(memory_format=fmt)
    w = (torch.randn(cout, cin, k, k) * (1.0 / math.sqrt(cin * k * k))).to(memory_format=fmt)
    gy = torch.randn(n, cout, ho, ho).to(memory_format=fmt)
    stride, padding, dilation = [s, s], [p, p], [1, 1]
    if pass_ == "forward":
        return lambda: F.conv2d(x, w, None, stride, padding)
    mask = [True, False, False] if pass_ == "backward_data" else [False, True, False]
    if hasattr(torch.ops.aten, "convolution_backward"):
        op = torch.ops.aten.convolution_backward
        return lambda: op(gy, x, w, None, stride, padding, dilation,
                          False, [0, 0], 1, mask)
    # Fallback for old torch: autograd with only one tensor requiring grad.
    xg = x.detach().requires_grad_(pass_ == "backward_data")
    wg = w.detach().requires_grad_(pass_ == "backward_weights")
    target = xg if pass_ == "backward_data" else wg

    def call():
        with torch.enable_grad():
            y = F.conv2d(xg, wg, None, stride, padding)
            return torch.autograd.grad(y, target, gy)
    return call


def time_once(fn, loops):
    t0 = time.perf_counter()
    for _ in range(loops):
        fn()
    return (time.perf_counter() - t0) / loops


def bench_group(calls, repeats):
    """calls: {layout: fn}. Returns {layout: [seconds per call, ...]}."""
    loops = {}
    for layout, fn in calls.items():       # 2 warm-up calls each
        fn()
        fn()
    for layout, fn in calls.items():       # calibrate the loop length
        t = time_once(fn, 1)
        loops[layout] = 1 if t >= MIN_TIMED_S else min(1000, math.ceil(MIN_TIMED_S / max(t, 1e-7)))
    samples = {layout: [] for layout in calls}
    for _ in range(repeats):
        for layout, fn in calls.items():   # interleave layouts
            samples[layout].append(time_once(fn, loops[layout]))
    return samples


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    ap.add_argument("--quick", action="store_true", help="batch 1 only, 3 repeats")
    ap.add_argument("--only", default="", help="comma-separated shape ids to run")
    ap.add_argument("--passes", default=",".join(PASSES))
    ap.add_argument("--layouts", default=",".join(LAYOUTS))
    ap.add_argument("--list", action="store_true", help="list shape ids and exit")
    args = ap.parse_args(argv)

    if args.list:
        for sh in SHAPES:
            print(shape_id(*sh))
        return 0

    batches = [int(b) for b in args.batches.split(",") if b]
    repeats = args.repeats
    if args.quick:
        batches, repeats = [1], 3
    passes = [q for q in args.passes.split(",") if q]
    layouts = [q for q in args.layouts.split(",") if q]
    for q in passes:
        if q not in PASSES:
            ap.error(f"unknown pass {q!r}; choose from {PASSES}")
    for q in layouts:
        if q not in LAYOUTS:
            ap.error(f"unknown layout {q!r}; choose from {LAYOUTS}")
    shapes = SHAPES
    if args.only:
        wanted = [i for i in args.only.split(",") if i]
        known = {shape_id(*sh): sh for sh in SHAPES}
        unknown = [i for i in wanted if i not in known]
        if unknown:
            ap.error(f"unknown shape id(s) {unknown}; see --list")
        shapes = [sh for sh in SHAPES if shape_id(*sh) in wanted]

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    if not args.json:
        print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, "
              f"mkldnn {torch.backends.mkldnn.is_available()}, "
              f"repeats {repeats}, batches {batches}")
        print(f"{'id':22s} {'batch':>5s} {'pass':16s} {'layout':13s} "
              f"{'median ms':>10s} {'min ms':>9s} {'max ms':>9s} {'GFLOP/s':>8s}")
        sys.stdout.flush()

    with torch.no_grad():
        for sh in shapes:
            cin, cout, k, s, p, h = sh
            sid = shape_id(*sh)
            ho = out_size(h, k, s, p)
            for n in batches:
                flops = 2.0 * n * cout * ho * ho * cin * k * k
                for pass_ in passes:
                    calls = {lay: make_call(pass_, lay, n, *sh) for lay in layouts}
                    samples = bench_group(calls, repeats)
                    for lay in layouts:
                        ms = [t * 1e3 for t in samples[lay]]
                        med = statistics.median(ms)
                        row = {"id": sid, "batch": n, "pass": pass_, "layout": lay,
                               "ms_median": round(med, 5), "ms_min": round(min(ms), 5),
                               "ms_max": round(max(ms), 5),
                               "gflops": round(flops / med / 1e6, 3),
                               "threads": args.threads}
                        if args.json:
                            print(json.dumps(row))
                        else:
                            print(f"{sid:22s} {n:5d} {pass_:16s} {lay:13s} "
                                  f"{med:10.3f} {min(ms):9.3f} {max(ms):9.3f} "
                                  f"{row['gflops']:8.1f}")
                        sys.stdout.flush()
                    del calls
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:   # e.g. piped into `head`
        sys.exit(0)
