#!/usr/bin/env python3
"""Write the torchvision model-zoo oracle the Swift tests compare our models against.

Run from anywhere:  /tmp/torchenv/bin/python Scripts/torchvision_oracle.py
Writes Tests/Fixtures/torchvision_models.json (relative to the repo root) and
prints a summary table to stdout.  No weights are downloaded (weights=None);
every number recorded is architecture-only, so the file is deterministic for a
given torchvision/torch version.

File layout (all object keys sorted, one line per model / per state-dict key):
  torchvision_version, torch_version : versions used
  models[name] = {
      params          : trainable parameters, sum(p.numel() for p in
                        model.parameters() if p.requires_grad)
      macs_224        : multiply-accumulates of every nn.Conv2d and nn.Linear for
                        one 1x3x224x224 input (eval mode, no_grad, forward hooks):
                          conv   = out.numel()/N * (in_channels/groups) * kh * kw
                          linear = in_features * out_features (per sample)
      state_dict_keys : number of state_dict entries, num_batches_tracked excluded
  }
  keys[name] = [[key, [shape...]], ...] in state_dict order, num_batches_tracked
               excluded (every model in MODELS)

As a self-check the parameter count is compared with the "num_params" that
torchvision records in each model's DEFAULT weights metadata (read from the
Python enum; nothing is downloaded) and the script exits non-zero on a mismatch.
"""
import gc
import json
import os
import sys

import torch
import torch.nn as nn
import torchvision
import torchvision.models as tvm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from oracle_common import count_macs, is_bn_counter, state_dict_entries, write_json  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_PATH = os.path.join(ROOT, "Tests", "Fixtures", "torchvision_models.json")

MODELS = ["mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "vgg16_bn", "vgg16"]
IMAGE_SIZE = 224

torch.manual_seed(0)



def count_params(model):
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))



def build(name):
    model = tvm.get_model(name, weights=None)
    model.eval()
    return model


def reference_num_params(name):
    """torchvision's own recorded parameter count (weights metadata), or None."""
    try:
        return tvm.get_model_weights(name).DEFAULT.meta.get("num_params")
    except Exception:  # noqa: BLE001 - metadata is only a cross-check
        return None



def main():
    doc = {
        "torchvision_version": torchvision.__version__,
        "torch_version": torch.__version__,
        "models": {},
        "keys": {},
    }
    print(f"torchvision {torchvision.__version__}, torch {torch.__version__}")
    print(f"{'model':<22}{'params':>14}{'MACs@224':>18}{'sd keys':>9}  check")
    failed = False
    for name in MODELS:
        model = build(name)
        entries = state_dict_entries(model)
        info = {
            "params": count_params(model),
            "macs_224": count_macs(model),
            "state_dict_keys": len(entries),
        }
        ref = reference_num_params(name)
        if ref is None:
            check = "no ref"
        elif ref == info["params"]:
            check = "= torchvision meta"
        else:
            check = f"MISMATCH (meta {ref:,})"
            failed = True
        doc["models"][name] = info
        doc["keys"][name] = entries
        print(f"{name:<22}{info['params']:>14,}{info['macs_224']:>18,}{info['state_dict_keys']:>9}  {check}",
              flush=True)
        del model
        gc.collect()

    if failed:
        print("torchvision_oracle: parameter count differs from torchvision's metadata", file=sys.stderr)
        sys.exit(1)
    size = write_json(doc, OUT_PATH)
    print()
    print(f"wrote {os.path.relpath(OUT_PATH, ROOT)} ({size:,} bytes)")


if __name__ == "__main__":
    main()
