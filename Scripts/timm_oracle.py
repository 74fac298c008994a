#!/usr/bin/env python3
"""Write the timm model-zoo oracle the Swift tests compare our models against.

Run from anywhere:  /tmp/torchenv/bin/python Scripts/timm_oracle.py
Writes Tests/Fixtures/timm_models.json (relative to the repo root) and prints a
summary table to stdout.  No weights are downloaded (pretrained=False); every
number recorded is architecture-only, so the file is deterministic for a given
timm/torch version.

File layout (all object keys sorted):
  timm_version, torch_version : versions used
  models[name] = {
      params          : sum(p.numel() for p in model.parameters())
      macs_224        : multiply-accumulates of every nn.Conv2d and nn.Linear for
                        one 1x3x224x224 input (eval mode, no_grad, forward hooks):
                          conv   = out.numel()/N * (in_channels/groups) * kh * kw
                          linear = in_features * out_features (per sample)
      state_dict_keys : number of state_dict entries, num_batches_tracked excluded
  }
  keys[name] = [[key, [shape...]], ...] in state_dict order, num_batches_tracked
               excluded (only for KEY_MODELS)
  seresnet50_by_reduction[str(r)] = params of timm's seresnet50 architecture
               (resnet50 + SEModule in every Bottleneck) with rd_ratio = 1/r
               (SEModule's default rd_divisor=8, round_limit=0 apply).
Names timm does not know are skipped with a message on stderr.
"""
import functools
import gc
import json
import os
import sys

import torch
import torch.nn as nn
import timm
import timm.layers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from oracle_common import count_macs, is_bn_counter, state_dict_entries, write_json  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_PATH = os.path.join(ROOT, "Tests", "Fixtures", "timm_models.json")

MODELS = [
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "seresnet18", "seresnet34", "seresnet50", "seresnet101", "seresnet152",
    "resnext50_32x4d", "resnext101_32x4d",
    "seresnext50_32x4d", "seresnext101_32x4d",
    "legacy_seresnet18", "legacy_seresnet34", "legacy_seresnet50",
    "legacy_seresnet101", "legacy_seresnet152",
    "legacy_seresnext26_32x4d", "legacy_seresnext50_32x4d", "legacy_seresnext101_32x4d",
    "legacy_senet154",
    "inception_resnet_v2",
]
KEY_MODELS = ["seresnet50", "legacy_seresnet50", "seresnext50_32x4d", "legacy_senet154", "seresnet18"]
REDUCTIONS = [2, 4, 8, 16, 32]
IMAGE_SIZE = 224

torch.manual_seed(0)



def count_params(model):
    return int(sum(p.numel() for p in model.parameters()))



def build(name, **kwargs):
    model = timm.create_model(name, pretrained=False, **kwargs)
    model.eval()
    return model


def se_resnet50_with_reduction(r):
    se = functools.partial(timm.layers.SEModule, rd_ratio=1.0 / r)
    return build("resnet50", block_args=dict(attn_layer=se))



def main():
    doc = {
        "timm_version": timm.__version__,
        "torch_version": torch.__version__,
        "models": {},
        "keys": {},
        "seresnet50_by_reduction": {},
    }
    print(f"timm {timm.__version__}, torch {torch.__version__}")
    print(f"{'model':<28}{'params':>14}{'MACs@224':>18}{'sd keys':>9}")
    for name in MODELS:
        if not timm.is_model(name):
            print(f"timm_oracle: timm {timm.__version__} has no model '{name}', skipped", file=sys.stderr)
            continue
        try:
            model = build(name)
        except Exception as e:  # noqa: BLE001 - report and continue
            print(f"timm_oracle: cannot build '{name}': {e}, skipped", file=sys.stderr)
            continue
        entries = state_dict_entries(model)
        info = {
            "params": count_params(model),
            "macs_224": count_macs(model),
            "state_dict_keys": len(entries),
        }
        doc["models"][name] = info
        if name in KEY_MODELS:
            doc["keys"][name] = entries
        print(f"{name:<28}{info['params']:>14,}{info['macs_224']:>18,}{info['state_dict_keys']:>9}", flush=True)
        del model
        gc.collect()

    print()
    print("seresnet50 architecture with SE rd_ratio = 1/r")
    print(f"{'r':>4}{'params':>14}")
    for r in REDUCTIONS:
        model = se_resnet50_with_reduction(r)
        p = count_params(model)
        doc["seresnet50_by_reduction"][str(r)] = p
        print(f"{r:>4}{p:>14,}", flush=True)
        if r == 16 and "seresnet50" in doc["models"]:
            ref = doc["models"]["seresnet50"]["params"]
            ok = p == ref
            ref_keys = doc["keys"].get("seresnet50")
            if ref_keys is not None:
                ok = ok and state_dict_entries(model) == ref_keys
            print(f"     r=16 vs seresnet50 ({ref:,}): {'identical' if ok else 'MISMATCH'}")
            if not ok:
                print("timm_oracle: r=16 variant does not reproduce seresnet50", file=sys.stderr)
                sys.exit(1)
        del model
        gc.collect()

    size = write_json(doc, OUT_PATH)
    print()
    print(f"wrote {os.path.relpath(OUT_PATH, ROOT)} ({size:,} bytes)")


if __name__ == "__main__":
    main()
