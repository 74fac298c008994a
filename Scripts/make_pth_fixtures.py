#!/usr/bin/env python3
"""Generate the PyTorch-checkpoint fixtures for Tests/CheckpointsTests/TorchCheckpointTests.swift.

Run from anywhere:  /tmp/torchenv/bin/python Scripts/make_pth_fixtures.py
Writes Tests/Fixtures/pth_* (relative to the repo root), all small:

  pth_dtypes_zip.pth / pth_dtypes_legacy.pth
      the same OrderedDict in the zip format (torch >= 1.6) and the legacy pickle stream
      (_use_new_zipfile_serialization=False): f32 / f16 / bf16 / f64 / int64 / int32 tensors,
      a Parameter, a 0-dim int64 num_batches_tracked, a transposed (non-contiguous) tensor,
      a view with a storage offset, two tensors sharing one storage.
  pth_wrapped_state_dict.pth   {"epoch", "state_dict" (module.-prefixed), "state_dict_ema",
                                "optimizer", "args" (argparse.Namespace)}   zip format
  pth_wrapped_model_ema.pth    {"model", "ema", "epoch"}                     legacy format
  pth_wrapped_model.pth        {"model" (module.-prefixed), "best_acc1"}     zip format
  pth_empty.pth                {"epoch": 1, "note": "no tensors"}            zip format
  pth_deflated.pth             pth_dtypes_zip.pth re-zipped with deflate (refused: torch stores)
  pth_hostile_*.pth            a tensor whose size / stride / offset overflow or leave its 4-element storage
  pth_expected.safetensors     every expected tensor as contiguous float32, key "<fixture>/<key>"
  pth_expected.json            the malicious files' forbidden globals and marker paths, and the
                               counts and spot values of the real MobileNetV2 checkpoint
                               (.assets/mobilenet_v2-b0353104.pth) when it is present
  pth_evil_os_system.pkl       plain pickle whose __reduce__ calls os.system (posix.system)
  pth_evil_exec_zip.pth        torch.save zip whose data.pkl reduces builtins.exec
  pth_evil_eval_legacy.pth     legacy format whose main pickle reduces builtins.eval
  pth_evil_subprocess.pkl      plain pickle reducing subprocess.Popen
Each malicious file would create /tmp/senet-pickle-pwned-<random> if it were ever executed.
"""
import argparse
import collections
import json
import os
import pickle
import secrets
import struct

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "Fixtures")
ASSET = os.path.join(ROOT, ".assets", "mobilenet_v2-b0353104.pth")

expected = {}  # "<fixture>/<key>" -> float32 contiguous tensor


def record(fixture, sd):
    for k, v in sd.items():
        expected[f"{fixture}/{k}"] = v.detach().to(torch.float32).contiguous().clone()


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for k, t in tensors.items():
        b = t.numpy().astype("<f4").tobytes()
        header[k] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def dtype_dict():
    g = torch.Generator().manual_seed(4)
    sd = collections.OrderedDict()
    sd["conv.weight"] = torch.randn(4, 3, 3, 3, generator=g)
    sd["half"] = torch.randn(5, 7, generator=g).half()
    sd["bfloat"] = torch.randn(3, 6, generator=g).bfloat16()
    sd["double"] = torch.randn(2, 3, 4, generator=g).double() * 1e3
    sd["long"] = torch.arange(-6, 6, dtype=torch.int64).reshape(3, 4) * 1000
    sd["int"] = torch.tensor([16777216, -16777216, 7, 0], dtype=torch.int32)
    sd["bn.num_batches_tracked"] = torch.tensor(123456, dtype=torch.int64)
    sd["param"] = torch.nn.Parameter(torch.randn(6, generator=g))
    base = torch.randn(5, 4, generator=g)
    sd["transposed"] = base.t()  # shape 4x5, strides (1, 4)
    buf = torch.randn(30, generator=g)
    sd["view_offset"] = buf[7:19].view(3, 4)  # storage offset 7
    sd["shared_a"] = buf[0:10:2]  # same storage, stride 2
    sd["scalar"] = torch.tensor(2.5)
    sd["empty"] = torch.zeros(0, 3)
    sd["strided3d"] = torch.randn(4, 6, 5, generator=g).permute(2, 0, 1)[:, 1:3, ::2]
    return sd


def wrapped():
    g = torch.Generator().manual_seed(9)
    plain = collections.OrderedDict()
    plain["fc.weight"] = torch.randn(3, 4, generator=g)
    plain["fc.bias"] = torch.randn(3, generator=g)
    plain["bn.running_mean"] = torch.randn(3, generator=g)
    plain["bn.num_batches_tracked"] = torch.tensor(17)
    ema = collections.OrderedDict((k, (v * 0.5 if v.is_floating_point() else v)) for k, v in plain.items())
    return plain, ema


def prefixed(sd):
    out = collections.OrderedDict(("module." + k, v) for k, v in sd.items())
    out._metadata = collections.OrderedDict({"": {"version": 1}})  # as nn.Module.state_dict() sets
    return out


class Evil:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


class Geometry:
    """Pickles as a tensor over `storage` with arbitrary size / stride / offset."""
    def __init__(self, storage, size, stride, offset):
        self.storage, self.size, self.stride, self.offset = storage, size, stride, offset

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2,
                (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict()))


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f.startswith("pth_"):
            os.remove(os.path.join(OUT, f))

    sd = dtype_dict()
    torch.save(sd, os.path.join(OUT, "pth_dtypes_zip.pth"))
    torch.save(sd, os.path.join(OUT, "pth_dtypes_legacy.pth"), _use_new_zipfile_serialization=False)
    record("dtypes", sd)

    plain, ema = wrapped()
    record("plain", plain)
    record("ema", ema)
    optimizer = {"state": {0: {"momentum_buffer": torch.ones(3, 4)}}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]}
    args = argparse.Namespace(model="seresnet50", lr=0.1, epochs=100)
    torch.save({"epoch": 7, "state_dict": prefixed(plain), "state_dict_ema": prefixed(ema),
                "optimizer": optimizer, "args": args}, os.path.join(OUT, "pth_wrapped_state_dict.pth"))
    torch.save({"model": plain, "ema": ema, "epoch": 3}, os.path.join(OUT, "pth_wrapped_model_ema.pth"),
               _use_new_zipfile_serialization=False)
    torch.save({"model": prefixed(plain), "best_acc1": 76.5}, os.path.join(OUT, "pth_wrapped_model.pth"))
    torch.save({"epoch": 1, "note": "no tensors"}, os.path.join(OUT, "pth_empty.pth"))

    # The same archive re-zipped with deflate: torch never writes this, the reader refuses it.
    import zipfile
    with zipfile.ZipFile(os.path.join(OUT, "pth_dtypes_zip.pth")) as src, \
            zipfile.ZipFile(os.path.join(OUT, "pth_deflated.pth"), "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))

    # Hostile tensor geometry around a real 4-element storage (torch.save writes them happily).
    storage = torch.arange(4, dtype=torch.float32).untyped_storage()
    storage = torch.storage.TypedStorage(wrap_storage=storage, dtype=torch.float32, _internal=True)
    for name, size, stride, offset in [("expand", (1 << 40,), (0,), 0), ("outside", (3,), (2,), 0),
                                       ("overflow", (2, 2), (1 << 62, 1 << 62), 0), ("offset", (2,), (1,), 3)]:
        torch.save(collections.OrderedDict(x=Geometry(storage, size, stride, offset)),
                   os.path.join(OUT, f"pth_hostile_{name}.pth"))

    write_safetensors(os.path.join(OUT, "pth_expected.safetensors"), expected)

    # Malicious files. If anything ever executed them, the marker file would appear.
    marker = f"/tmp/senet-pickle-pwned-{secrets.token_hex(6)}"
    evil = {}
    with open(os.path.join(OUT, "pth_evil_os_system.pkl"), "wb") as f:
        pickle.dump({"weight": Evil(os.system, f"touch {marker}")}, f, protocol=2)
    evil["pth_evil_os_system.pkl"] = f"{os.system.__module__}.system"
    torch.save(collections.OrderedDict(w=torch.ones(2), x=Evil(exec, f"open('{marker}', 'w').close()")),
               os.path.join(OUT, "pth_evil_exec_zip.pth"))
    evil["pth_evil_exec_zip.pth"] = "builtins.exec"
    torch.save(collections.OrderedDict(w=torch.ones(2), x=Evil(eval, f"open('{marker}', 'w').close()")),
               os.path.join(OUT, "pth_evil_eval_legacy.pth"), _use_new_zipfile_serialization=False)
    evil["pth_evil_eval_legacy.pth"] = "builtins.eval"
    import subprocess
    with open(os.path.join(OUT, "pth_evil_subprocess.pkl"), "wb") as f:
        pickle.dump([Evil(subprocess.Popen, ["touch", marker])], f, protocol=4)
    evil["pth_evil_subprocess.pkl"] = "subprocess.Popen"

    info = {"marker": marker, "evil": evil}
    if os.path.exists(ASSET):
        m = torch.load(ASSET, map_location="cpu", weights_only=True)
        spots = {}
        for k in ["features.0.0.weight", "features.1.conv.0.1.running_var", "classifier.1.bias",
                  "features.18.1.num_batches_tracked", "features.17.conv.2.weight"]:
            if k in m:
                v = m[k].detach().to(torch.float32).contiguous().flatten()
                spots[k] = {"shape": list(m[k].shape), "first": [float(x) for x in v[:8]],
                            "sum": float(v.double().sum())}
        info["mobilenet_v2"] = {
            "count": len(m),
            "floating_numel": sum(v.numel() for v in m.values() if v.is_floating_point()),
            "parameter_numel": sum(v.numel() for k, v in m.items()
                                   if v.is_floating_point() and "running_" not in k),
            "first_key": next(iter(m)), "last_key": list(m)[-1],
            "spots": spots,
        }
    with open(os.path.join(OUT, "pth_expected.json"), "w") as f:
        json.dump(info, f, indent=1, sort_keys=True)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT) if f.startswith("pth_"))
    print(f"wrote pth_* fixtures, {total} bytes in all")


if __name__ == "__main__":
    main()
