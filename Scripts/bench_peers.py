#!/usr/bin/env python3
"""Whole-network timings of our peers on the workloads `senet bench` runs, for `make bench`.

    .venv-bench/bin/python Scripts/bench_peers.py [--threads 2] [--workloads ID,ID] [--peers P,P]
        [--iterations N] [--warmup N] [--json]

Workloads (ids):
  seresnet50-inf-b1, seresnet50-inf-b16   timm `seresnet50`, evaluation mode, 224x224
  seresnet50-train-b16                    forward + backward + SGD step (momentum 0.9, wd 1e-4)
  seresnet20-train-b128                   CIFAR SE-ResNet-20 (He et al. option-A shortcuts, SE
                                          floor(C/16) on the residual branch, as ours), 32x32, 10 classes
Peers: eager (NCHW), channels_last, compile (torch.compile, inductor; skipped where it fails),
onnxruntime (inference only; the model exported from timm with torch.onnx).

Each timing: --warmup untimed calls, then --iterations timed calls; median, min, max in ms.
With --json one object per line:
  {"workload","peer","ms_median","ms_min","ms_max","images_per_second","batch","threads","error"?}
"""
import argparse
import resource
import json
import os
import statistics
import sys
import tempfile
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---- CIFAR SE-ResNet-20, the same network as our `seresnet20` ----

class SE(nn.Module):
    def __init__(self, c, r=16):
        super().__init__()
        h = max(1, c // r)
        self.fc1 = nn.Conv2d(c, h, 1)
        self.fc2 = nn.Conv2d(h, c, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.se = SE(cout)
        self.stride, self.extra = stride, cout - cin

    def forward(self, x):
        h = self.se(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        sc = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
        if self.extra:
            sc = F.pad(sc, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
        return F.relu(h + sc)


class CifarSEResNet20(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, cin = [], 16
        for i, w in enumerate([16, 32, 64]):
            for b in range(3):
                blocks.append(Block(cin, w, 2 if b == 0 and i > 0 else 1))
                cin = w
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        h = self.blocks(F.relu(self.bn1(self.conv1(x))))
        return self.fc(h.mean((2, 3)))


WORKLOADS = {
    "seresnet50-inf-b1": ("seresnet50", "inference", 1, 224),
    "seresnet50-inf-b16": ("seresnet50", "inference", 16, 224),
    "seresnet50-train-b16": ("seresnet50", "training", 16, 224),
    "seresnet20-train-b128": ("seresnet20", "training", 128, 32),
    # The plain network, for the SE overhead (SE-ResNet-50 time ÷ ResNet-50 time).
    "resnet50-inf-b16": ("resnet50", "inference", 16, 224),
    "resnet50-train-b16": ("resnet50", "training", 16, 224),
}
PEERS = ["eager", "channels_last", "compile", "onnxruntime"]


def build(name):
    if name == "seresnet20":
        return CifarSEResNet20(), 10
    import timm
    return timm.create_model(name), 1000


def timed(step, warmup, iterations):
    for _ in range(warmup):
        step()
    ts = []
    for _ in range(iterations):
        t = time.perf_counter()
        step()
        ts.append((time.perf_counter() - t) * 1000)
    return statistics.median(ts), min(ts), max(ts)


def run(workload, peer, args):
    name, mode, batch, size = WORKLOADS[workload]
    model, classes = build(name)
    x = torch.randn(batch, 3, size, size)
    if peer == "onnxruntime":
        if mode != "inference":
            return None
        import onnxruntime as ort
        model.eval()
        path = os.path.join(tempfile.mkdtemp(), name + ".onnx")
        torch.onnx.export(model, (x,), path, input_names=["x"], output_names=["y"], dynamo=False)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        feed = {"x": x.numpy()}
        return timed(lambda: sess.run(None, feed), args.warmup, args.iterations)
    if peer == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    fn = model
    if peer == "compile":
        fn = torch.compile(model)
    if mode == "inference":
        model.eval()

        def step():
            with torch.inference_mode():
                fn(x)
        return timed(step, args.warmup + (2 if peer == "compile" else 0), args.iterations)
    model.train()
    target = torch.arange(batch) % classes
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(fn(x), target).backward()
        opt.step()
    return timed(step, args.warmup + (2 if peer == "compile" else 0), args.iterations)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for w in args.workloads.split(","):
        batch = WORKLOADS[w][2]
        for p in args.peers.split(","):
            rec = {"workload": w, "peer": p, "batch": batch, "threads": args.threads, "torch": torch.__version__}
            try:
                r = run(w, p, args)
                if r is None:
                    continue
                rec.update(ms_median=r[0], ms_min=r[1], ms_max=r[2], images_per_second=batch / (r[0] / 1000),
                           # The process's peak so far: one workload and one peer per process
                           # (as Scripts/bench_models.py runs it for the memory check) makes it that run's.
                           peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
            except Exception as e:  # a peer that cannot run this workload is reported, not fatal
                rec["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]
            if args.json:
                print(json.dumps(rec), flush=True)
            else:
                if "error" in rec:
                    print(f"{w:24s} {p:14s} failed: {rec['error']}", flush=True)
                else:
                    print(f"{w:24s} {p:14s} {rec['ms_median']:9.1f} ms  {rec['images_per_second']:8.2f} img/s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
