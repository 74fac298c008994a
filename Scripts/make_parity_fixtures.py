#!/usr/bin/env python3
"""Logit-parity fixtures: timm's own models, every parameter and buffer randomised, on random inputs.

Run: /tmp/torchenv/bin/python Scripts/make_parity_fixtures.py
Writes Tests/Fixtures/parity_timm.safetensors (a few KB: logits only).

Weights and inputs are not stored: both sides synthesise them from the tensor's checkpoint key
with the counter-based generator below (SplitMix64 finaliser over FNV-1a-64(key) + i·golden ratio),
which Sources/_TestSupport/Synthetic.swift implements identically. Every value is computed in
float64 from a 24-bit uniform u and rounded once to float32, so both sides hold the same bits:
  conv / linear weights (rank >= 2): (2u - 1) * sqrt(3 / fan_in)
  *.weight of rank 1 (BN gamma):      0.5 + u
  *.running_var:                      0.5 + u
  *.bias, *.running_mean:             0.2 * (u - 0.5)
  input* (any key starting "input"):  2 * (2u - 1)
timm zero-initialises the last BN of every residual block, which would hide the SE path; here
every BN gets gamma in [0.5, 1.5) and random running statistics.

The models and the exact timm code path each follows:
  seresnet18      timm.models.resnet.ResNet, BasicBlock, attn_layer='se' -> timm.layers.SEModule
                  (rd_ratio 1/16, rd_divisor 8, bias, ReLU, sigmoid), SE after bn2, before the add;
                  stem 7x7/2 + maxpool 3/2 pad 1; stride in conv1 of the block (3x3).
  legacy_seresnet18  timm.models.senet.SENet, SEResNetBlock + SEModule (channels // 16, fc1/fc2
                  1x1 convs with bias), layer0 7x7/2 + maxpool 3/2 ceil_mode, last_linear.
  seresnext_tiny  timm.models.resnet.ResNet(block=Bottleneck, layers=[1, 1, 1, 1], cardinality=8,
                  base_width=4, block_args=dict(attn_layer='se')): the seresnext50_32x4d code
                  path at reduced width (3x3 widths 32/64/128/256 in 8 groups).
Inputs: batch 2 at 224x224 and batch 2 at 160x208 (non-square), eval mode.
"""
import json
import os
import sys

import numpy as np
import torch
import timm
from timm.models.resnet import ResNet, Bottleneck

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from oracle_common import write_safetensors  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "Fixtures", "parity_timm.safetensors")
M64 = (1 << 64) - 1
SIZES = [(224, 224), (160, 208)]


def fnv1a64(s):
    h = 0xcbf29ce484222325
    for b in s.encode("utf-8"):
        h = ((h ^ b) * 0x100000001b3) & M64
    return h


def uniform(key, n):
    """n values u in [0, 1), 24-bit, from the key's counter stream."""
    with np.errstate(over="ignore"):
        i = np.arange(1, n + 1, dtype=np.uint64)
        z = np.uint64(fnv1a64(key)) + i * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) / float(1 << 24)


def synthetic(key, shape):
    n = int(np.prod(shape)) if len(shape) else 1
    u = uniform(key, n)
    if key.startswith("input"):
        v = 2.0 * (2.0 * u - 1.0)
    elif key.endswith("running_var") or (key.endswith(".weight") and len(shape) == 1):
        v = 0.5 + u
    elif key.endswith(".bias") or key.endswith("running_mean"):
        v = 0.2 * (u - 0.5)
    else:
        fan_in = int(np.prod(shape[1:]))
        v = (2.0 * u - 1.0) * np.sqrt(3.0 / fan_in)
    return torch.from_numpy(v.astype(np.float32).reshape(shape))


def randomise(model):
    sd = model.state_dict()
    new = {k: (t if k.endswith("num_batches_tracked") else synthetic(k, tuple(t.shape))) for k, t in sd.items()}
    model.load_state_dict(new, strict=True)
    return model


def models():
    yield "seresnet18", timm.create_model("seresnet18", pretrained=False)
    yield "legacy_seresnet18", timm.create_model("legacy_seresnet18", pretrained=False)
    yield "seresnext_tiny", ResNet(block=Bottleneck, layers=[1, 1, 1, 1], cardinality=8, base_width=4,
                                   block_args=dict(attn_layer="se"))


def main():
    torch.set_num_threads(2)
    out = {}
    for name, model in models():
        randomise(model).eval()
        for h, w in SIZES:
            x = synthetic("input", (2, 3, h, w))
            with torch.no_grad():
                y = model(x)
            out[f"{name}.{h}x{w}"] = y.float()
            top5 = y.topk(5, dim=1).indices.tolist()
            print(f"{name} {h}x{w}: max|logit| {y.abs().max():.4g}, top-5 {top5}", file=sys.stderr)
    meta = {"timm_version": timm.__version__, "torch_version": torch.__version__,
            "sizes": json.dumps(SIZES), "models": json.dumps(["seresnet18", "legacy_seresnet18", "seresnext_tiny"])}
    write_safetensors(OUT, out, meta)
    print("wrote", OUT, os.path.getsize(OUT), "bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
