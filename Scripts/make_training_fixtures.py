#!/usr/bin/env python3
"""Training-parity fixtures: SGD steps of a small SE-ResNet in PyTorch.

Run: /tmp/torchenv/bin/python Scripts/make_training_fixtures.py
Writes Tests/Fixtures/training_sgd.safetensors.

Model: timm.models.resnet.ResNet(block=BasicBlock, layers=[1, 1, 1, 1], num_classes=10,
block_args=dict(attn_layer='se')) -- timm's seresnet18 code path with one block per stage --
with every parameter and buffer synthesised from its key (make_parity_fixtures.synthetic, which
the Swift side reimplements bit-exactly), in training mode (BN batch statistics, running-stat
updates with momentum 0.1 and unbiased variance). Step s (0-based) trains on the batch
synthetic(f"input{s}", (8, 3, 64, 64)) with targets (i + s) % 10. Optimiser: torch.optim.SGD(lr=0.001, momentum=0.9, weight_decay=1e-4) on every
parameter (PyTorch's default: BN and biases decayed too); loss: mean cross-entropy. The rate is
small because this tiny batch makes training chaotic: at lr 0.01 and 32x32, PyTorch's own float32
and float64 loss sequences differ by 19% after 20 steps; at 0.001 and 64x64 by 1e-4, so a 1e-3 comparison
tests the implementation, not the rounding. For the same reason the reference runs in float64
from the float32 weights and inputs (as Scripts/make_fixtures.py does): float32 runs of PyTorch
itself (1 vs 2 threads) drift ~1e-4 apart from it over these 20 steps.

Stored:
  loss          the 20 losses of the 20 steps (loss[s] computed before update s)
  step1.<key>   after ONE step, up to 64 elements of every parameter and buffer, at indices
                (j * n) // m, j < m = min(n, 64), of the flattened tensor
  delta1.<key>  the same elements of (after - before) for trainable parameters, in float64
                before rounding to float32
"""
import os
import sys

import torch
from timm.models.resnet import BasicBlock, ResNet

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_parity_fixtures import synthetic  # noqa: E402
from oracle_common import write_safetensors  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "Fixtures", "training_sgd.safetensors")


def sample(t):
    flat = t.detach().reshape(-1)
    n = flat.numel()
    m = min(n, 64)
    return flat[[(j * n) // m for j in range(m)]]


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    model = ResNet(block=BasicBlock, layers=[1, 1, 1, 1], num_classes=10, block_args=dict(attn_layer="se"))
    sd = model.state_dict()
    model.load_state_dict({k: (v if k.endswith("num_batches_tracked") else synthetic(k, tuple(v.shape))) for k, v in sd.items()})
    model.double().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=1e-4)
    before = {k: v.detach().clone().double() for k, v in model.named_parameters()}
    out, losses = {}, []
    for step in range(20):
        x = synthetic(f"input{step}", (8, 3, 64, 64)).double()
        y = torch.tensor([(i + step) % 10 for i in range(8)])
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step == 0:
            for k, v in model.state_dict().items():
                if not k.endswith("num_batches_tracked"):
                    out[f"step1.{k}"] = sample(v).float()
            for k, v in model.named_parameters():
                out[f"delta1.{k}"] = sample(v.detach().double() - before[k]).float()
    out["loss"] = torch.tensor(losses, dtype=torch.float32)
    print("losses:", " ".join(f"{l:.5f}" for l in losses), file=sys.stderr)
    write_safetensors(OUT, out, {"torch_version": torch.__version__})
    print("wrote", OUT, os.path.getsize(OUT), "bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
