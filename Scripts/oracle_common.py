"""Shared by Scripts/timm_oracle.py and Scripts/torchvision_oracle.py: MAC counting with forward
hooks, state-dict listing, and the deterministic one-line-per-entry JSON writer."""

import json
import os
import struct

import torch
import torch.nn as nn

IMAGE_SIZE = 224


def is_bn_counter(key):
    return key.endswith("num_batches_tracked")


def state_dict_entries(model):
    return [[k, [int(d) for d in v.shape]] for k, v in model.state_dict().items() if not is_bn_counter(k)]


def count_macs(model, size=IMAGE_SIZE):
    total = [0]

    def conv_hook(mod, inp, out):
        n = out.shape[0]
        kh, kw = mod.kernel_size
        total[0] += (out.numel() // n) * (mod.in_channels // mod.groups) * kh * kw

    def linear_hook(mod, inp, out):
        n = out.shape[0]
        # out.numel()/N/out_features is 1 for a (N, features) input.
        rows = out.numel() // n // mod.out_features
        total[0] += rows * mod.in_features * mod.out_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
    finally:
        for h in handles:
            h.remove()
    return int(total[0])


def write_json(doc, path):
    """Sorted keys, one line per model / per state-dict key (`keys` maps names to lists, or is
    one model's list); valid JSON."""
    d = lambda x: json.dumps(x, sort_keys=True, separators=(",", ":"))
    lines = ["{"]
    top = sorted(doc)
    for ti, tk in enumerate(top):
        comma = "," if ti < len(top) - 1 else ""
        val = doc[tk]
        if tk == "models":
            lines.append(f"{d(tk)}:{{")
            names = sorted(val)
            for i, n in enumerate(names):
                lines.append(f"  {d(n)}:{d(val[n])}" + ("," if i < len(names) - 1 else ""))
            lines.append("}" + comma)
        elif tk == "keys" and isinstance(val, list):
            # one model's [key, shape] list, one entry a line
            lines.append(f"{d(tk)}:[")
            for j, e in enumerate(val):
                lines.append(f"  {d(e)}" + ("," if j < len(val) - 1 else ""))
            lines.append("]" + comma)
        elif tk == "keys":
            lines.append(f"{d(tk)}:{{")
            names = sorted(val)
            for i, n in enumerate(names):
                lines.append(f"  {d(n)}:[")
                entries = val[n]
                for j, e in enumerate(entries):
                    lines.append(f"    {d(e)}" + ("," if j < len(entries) - 1 else ""))
                lines.append("  ]" + ("," if i < len(names) - 1 else ""))
            lines.append("}" + comma)
        else:
            lines.append(f"{d(tk)}:{d(val)}{comma}")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    assert json.loads(text) == doc, "custom JSON writer round-trip mismatch"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return len(text.encode())



def write_safetensors(path, tensors, metadata):
    """Deterministic safetensors writer: float32 tensors sorted by key, metadata as given.

    (safetensors.torch.save_file serialises __metadata__ from a hash map, so its bytes vary
    from run to run; fixtures must not.)
    """
    header = {"__metadata__": metadata}
    blobs, offset = [], 0
    for key in sorted(tensors):
        data = tensors[key].detach().contiguous().float().numpy().astype("<f4").tobytes()
        header[key] = {"dtype": "F32", "shape": list(tensors[key].shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    hdr = json.dumps(header, separators=(",", ":")).encode()
    hdr += b" " * (-len(hdr) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hdr)) + hdr + b"".join(blobs))
