#!/usr/bin/env python3
"""Write the BN-Inception oracle the Swift tests compare our BNInception against.

Run from anywhere:  /tmp/torchenv/bin/python Scripts/bninception_oracle.py
Requires: pip install --no-deps pretrainedmodels munch six  (Cadene's package, v0.7.4)

The reference is pretrainedmodels.models.bninception.BNInception(num_classes=1000),
the Caffe BN-Inception (Ioffe & Szegedy 2015, as released by Yuanjun Xiong) that the
SENet paper's SE-BN-Inception builds on. It is built without weights; everything
recorded is architecture-only and deterministic for a given torch/pretrainedmodels.

Writes Tests/Fixtures/bninception.json (relative to the repo root):
  params          : trainable parameters, sum(p.numel() for p in parameters() if requires_grad)
  macs_224        : multiply-accumulates of every nn.Conv2d and nn.Linear for one
                    1x3x224x224 input (eval mode, no_grad, forward hooks):
                      conv   = out.numel()/N * (in_channels/groups) * kh * kw
                      linear = in_features * out_features (per sample)
  state_dict_keys : number of state_dict entries, num_batches_tracked excluded
  keys            : [[key, [shape...]], ...] in state_dict order, num_batches_tracked excluded
  torch_version, pretrainedmodels_version : versions used

Note: Cadene's model ends with a fixed AvgPool2d(7) (global only at 224x224), then
view + last_linear (Linear 1024 -> 1000).
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from oracle_common import count_macs, state_dict_entries, write_json  # noqa: E402

import pretrainedmodels  # noqa: E402
from pretrainedmodels.models.bninception import BNInception  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "Fixtures", "bninception.json")


def main():
    torch.manual_seed(0)
    model = BNInception(num_classes=1000).eval()
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    keys = state_dict_entries(model)
    macs = count_macs(model, 224)
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 224, 224))
    assert tuple(out.shape) == (1, 1000), out.shape

    doc = {
        "params": int(params),
        "macs_224": int(macs),
        "state_dict_keys": len(keys),
        "keys": keys,
        "torch_version": torch.__version__,
        "pretrainedmodels_version": getattr(pretrainedmodels, "__version__", "unknown"),
    }
    write_json(doc, OUT)
    print(f"BNInception: params={params} macs_224={macs} state_dict_keys={len(keys)} -> {OUT}")


if __name__ == "__main__":
    main()
