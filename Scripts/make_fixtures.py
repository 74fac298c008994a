#!/usr/bin/env python3
"""Generate reference fixtures for the Swift op tests.

Run from anywhere:  /tmp/torchenv/bin/python Scripts/make_fixtures.py
Writes Tests/Fixtures/<group>.safetensors (relative to the repo root).

Conventions (the Swift tests rely on these):
  * every tensor is float32 and contiguous; keys are "<case>.<name>";
  * __metadata__["cases"] is a JSON list of case names (in order) and
    __metadata__[<case>] is a JSON object with that case's parameters;
  * each case seeds torch.manual_seed(1000 * file_index + case_index);
  * inputs are float32; the reference is computed in float64 from those
    exact float32 values, backward is driven by a float32 randn `dy`
    (cast to double); results are stored cast back to float32;
  * the gradient of input `foo` is stored as `dfoo`.
"""
import json
import math
import os
import re
import struct
import sys

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "Tests", "Fixtures")

torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)


def f32(t):
    return t.detach().to(torch.float32).contiguous().clone()


def leaf(t):
    """float32 input -> float64 leaf requiring grad."""
    return t.detach().to(torch.float64).requires_grad_(True)


def randn(*shape):
    return torch.randn(*shape, dtype=torch.float32)


class FixtureFile:
    def __init__(self, name, file_index):
        self.name = name
        self.file_index = file_index
        self.tensors = {}
        self.meta = {}
        self.cases = []

    def case(self, case, params):
        assert re.fullmatch(r"[a-z0-9_]+", case), case
        assert case not in self.cases, case
        torch.manual_seed(1000 * self.file_index + len(self.cases))
        self.cases.append(case)
        self.meta[case] = json.dumps(params)
        return case

    def put(self, case, **named):
        for k, v in named.items():
            key = f"{case}.{k}"
            assert key not in self.tensors, key
            self.tensors[key] = f32(v)

    def write(self):
        meta = {"cases": json.dumps(self.cases)}
        meta.update(self.meta)
        path = os.path.join(OUT_DIR, f"{self.name}.safetensors")
        write_safetensors(path, self.tensors, meta)
        return path


def write_safetensors(path, tensors, metadata):
    """Byte-for-byte deterministic safetensors writer.

    safetensors.torch.save_file serialises __metadata__ from a Rust HashMap,
    so its key order (and the file bytes) changes from run to run. The format
    is simple: u64 little-endian header length, a JSON header (padded with
    spaces to a multiple of 8 bytes), then the raw little-endian tensor data.
    Tensors are laid out sorted by key, as save_file does.
    """
    header = {"__metadata__": metadata}
    blobs = []
    offset = 0
    for key in sorted(tensors):
        t = tensors[key]
        assert t.dtype == torch.float32 and t.is_contiguous(), key
        data = t.numpy().astype("<f4", copy=False).tobytes()
        header[key] = {"dtype": "F32", "shape": list(t.shape),
                       "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    hdr = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hdr += b" " * (-len(hdr) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hdr)))
        f.write(hdr)
        for data in blobs:
            f.write(data)


def backward_with_dy(y):
    dy = randn(*y.shape)
    y.backward(dy.to(torch.float64))
    return dy


# --------------------------------------------------------------------------
def make_conv2d(fi):
    ff = FixtureFile("conv2d", fi)
    # name, N, C, H, W, O, kernel, stride, padding, dilation, groups, bias
    specs = [
        ("k3_p1", 2, 3, 7, 6, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1, True),
        ("k3_s2_p1_odd", 2, 4, 9, 11, 6, (3, 3), (2, 2), (1, 1), (1, 1), 1, True),
        ("k1", 2, 8, 5, 5, 6, (1, 1), (1, 1), (0, 0), (1, 1), 1, False),
        ("k1_s2", 1, 6, 7, 7, 8, (1, 1), (2, 2), (0, 0), (1, 1), 1, False),
        ("k7_s2_p3", 1, 3, 15, 13, 8, (7, 7), (2, 2), (3, 3), (1, 1), 1, False),
        ("groups2", 2, 8, 6, 6, 4, (3, 3), (1, 1), (1, 1), (1, 1), 2, True),
        ("groups4_s2", 2, 8, 9, 9, 8, (3, 3), (2, 2), (1, 1), (1, 1), 4, False),
        ("depthwise", 2, 6, 8, 7, 6, (3, 3), (1, 1), (1, 1), (1, 1), 6, True),
        ("depthwise_s2", 1, 8, 9, 9, 8, (3, 3), (2, 2), (1, 1), (1, 1), 8, False),
        ("dilation2", 1, 3, 10, 9, 4, (3, 3), (1, 1), (2, 2), (2, 2), 1, True),
        ("rect_kernel", 1, 4, 6, 8, 5, (1, 3), (2, 1), (0, 1), (1, 1), 1, True),
        ("wide", 2, 32, 6, 6, 48, (3, 3), (1, 1), (1, 1), (1, 1), 1, False),
    ]
    for name, n, c, h, w_, o, k, s, p, d, g, bias in specs:
        params = {"stride": list(s), "padding": list(p), "dilation": list(d),
                  "groups": g, "bias": bias}
        case = ff.case(name, params)
        x = randn(n, c, h, w_)
        # PyTorch-default weight scale (1/sqrt(fan_in)) keeps outputs O(1), as in a real network.
        w = randn(o, c // g, k[0], k[1]) / math.sqrt(c // g * k[0] * k[1])
        b = randn(o) if bias else None
        xd, wd = leaf(x), leaf(w)
        bd = leaf(b) if bias else None
        y = F.conv2d(xd, wd, bd, stride=s, padding=p, dilation=d, groups=g)
        dy = backward_with_dy(y)
        ff.put(case, x=x, w=w, y=y, dy=dy, dx=xd.grad, dw=wd.grad)
        if bias:
            ff.put(case, b=b, db=bd.grad)
    return ff


def make_batchnorm(fi):
    ff = FixtureFile("batchnorm", fi)
    specs = [
        ("train_n4", (4, 3, 5, 5), True),
        ("train_odd", (2, 5, 3, 7), True),
        ("train_1x1", (8, 6, 1, 1), True),
        ("eval", (3, 4, 5, 5), False),
    ]
    for name, shape, training in specs:
        batchnorm_case(ff, name, shape, training, relu=None)
    return ff


def batchnorm_case(ff, name, shape, training, relu):
    """One batch-norm case (followed by a ReLU when `relu`; None leaves the parameter out):
    inputs, running statistics before and after, output and gradients."""
    momentum, eps = 0.1, 1e-5
    params = {"training": training, "momentum": momentum, "eps": eps}
    if relu is not None:
        params = {"training": training, "relu": relu, "momentum": momentum, "eps": eps}
    case = ff.case(name, params)
    c = shape[1]
    x = randn(*shape) * 2 + 0.5
    weight = randn(c) * 0.5 + 1
    bias = randn(c)
    running_mean = randn(c) * 0.1
    running_var = torch.rand(c, dtype=torch.float32) + 0.5
    rm = running_mean.to(torch.float64).clone()
    rv = running_var.to(torch.float64).clone()
    xd, wd, bd = leaf(x), leaf(weight), leaf(bias)
    y = F.batch_norm(xd, rm, rv, wd, bd, training=training,
                     momentum=momentum, eps=eps)
    if relu:
        y = F.relu(y)
    dy = backward_with_dy(y)
    ff.put(case, x=x, weight=weight, bias=bias, running_mean=running_mean,
           running_var=running_var, y=y, running_mean_out=rm,
           running_var_out=rv, dy=dy, dx=xd.grad, dweight=wd.grad,
           dbias=bd.grad)


def make_activations(fi):
    ff = FixtureFile("activations", fi)
    fns = {"relu": F.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
           "hardsigmoid": F.hardsigmoid, "relu6": F.relu6, "hardswish": F.hardswish}
    for suffix, shape in (("", (2, 3, 4, 5)), ("_odd", (3, 7, 5, 1))):
        for op, fn in fns.items():
            case = ff.case(op + suffix, {"op": op})
            x = randn(*shape) * 3
            xd = leaf(x)
            y = fn(xd)
            dy = backward_with_dy(y)
            ff.put(case, x=x, y=y, dy=dy, dx=xd.grad)
    return ff


def make_pooling(fi):
    ff = FixtureFile("pooling", fi)
    # name, op, shape, kernel, stride, padding, ceil_mode, count_include_pad
    specs = [
        ("max_k3_s2_p1", "max", (2, 3, 8, 9), 3, 2, 1, False, True),
        ("max_k3_s2_ceil", "max", (2, 3, 8, 8), 3, 2, 0, True, True),
        ("max_k3_s2_p1_ceil", "max", (1, 2, 9, 10), 3, 2, 1, True, True),
        ("max_k2_s2", "max", (1, 3, 7, 7), 2, 2, 0, False, True),
        ("max_k3_s2_ceil_odd", "max", (1, 2, 7, 11), 3, 2, 0, True, True),
        ("avg_k3_s1_p1_incl", "avg", (2, 3, 6, 7), 3, 1, 1, False, True),
        ("avg_k3_s1_p1_excl", "avg", (2, 3, 6, 7), 3, 1, 1, False, False),
        ("avg_k2_s2_ceil", "avg", (1, 2, 7, 9), 2, 2, 0, True, True),
        ("avg_k3_s2_p1_ceil_incl", "avg", (1, 2, 8, 9), 3, 2, 1, True, True),
        ("avg_k3_s2_p1_ceil_excl", "avg", (1, 2, 8, 9), 3, 2, 1, True, False),
        ("global_avg", "global_avg", (2, 5, 4, 3), None, None, None, None, None),
        ("global_max", "global_max", (2, 5, 4, 3), None, None, None, None, None),
        ("global_avg_1x1", "global_avg", (3, 4, 1, 1), None, None, None, None, None),
        # adaptive average pooling to 7x7 (VGG's classifier input): the kernel holds the output size
        ("adaptive_10x9", "adaptive_avg", (1, 2, 10, 9), 7, None, None, None, None),
        ("adaptive_5x6", "adaptive_avg", (2, 3, 5, 6), 7, None, None, None, None),
        ("adaptive_14x14", "adaptive_avg", (1, 2, 14, 14), 7, None, None, None, None),
    ]
    for name, op, shape, k, s, p, ceil, incl in specs:
        if op.startswith("global"):
            params = {"op": op}
        elif op == "adaptive_avg":
            params = {"op": op, "output": [k, k]}
        else:
            params = {"op": op, "kernel": [k, k], "stride": [s, s],
                      "padding": [p, p], "ceil_mode": ceil,
                      "count_include_pad": incl}
        case = ff.case(name, params)
        x = randn(*shape)
        xd = leaf(x)
        if op == "max":
            y = F.max_pool2d(xd, k, s, p, ceil_mode=ceil)
        elif op == "avg":
            y = F.avg_pool2d(xd, k, s, p, ceil_mode=ceil, count_include_pad=incl)
        elif op == "global_avg":
            y = F.adaptive_avg_pool2d(xd, 1)
        elif op == "adaptive_avg":
            y = F.adaptive_avg_pool2d(xd, k)
        else:
            y = F.adaptive_max_pool2d(xd, 1)
        dy = backward_with_dy(y)
        ff.put(case, x=x, y=y, dy=dy, dx=xd.grad)
    return ff


def make_linear(fi):
    ff = FixtureFile("linear", fi)
    specs = [("small", 3, 5, 4, True), ("nobias", 1, 17, 9, False),
             ("wide", 8, 64, 10, True)]
    for name, n, fin, fout, bias in specs:
        case = ff.case(name, {"bias": bias})
        x = randn(n, fin)
        w = randn(fout, fin) / math.sqrt(fin)
        b = randn(fout) if bias else None
        xd, wd = leaf(x), leaf(w)
        bd = leaf(b) if bias else None
        y = F.linear(xd, wd, bd)
        dy = backward_with_dy(y)
        ff.put(case, x=x, w=w, y=y, dy=dy, dx=xd.grad, dw=wd.grad)
        if bias:
            ff.put(case, b=b, db=bd.grad)
    return ff


def make_broadcast(fi):
    ff = FixtureFile("broadcast", fi)
    full = (2, 3, 4, 5)
    specs = [
        ("add_same", "add", full, full),
        ("add_nc11", "add", full, (2, 3, 1, 1)),
        ("add_1c11", "add", full, (1, 3, 1, 1)),
        ("add_b_big", "add", (2, 3, 1, 1), full),
        ("mul_same", "mul", full, full),
        ("mul_nc11", "mul", full, (2, 3, 1, 1)),
        ("mul_1c11", "mul", full, (1, 3, 1, 1)),
        ("mul_11hw", "mul", full, (1, 1, 4, 5)),
    ]
    for name, op, sa, sb in specs:
        case = ff.case(name, {"op": op})
        a = randn(*sa)
        b = randn(*sb)
        ad, bd = leaf(a), leaf(b)
        y = ad + bd if op == "add" else ad * bd
        dy = backward_with_dy(y)
        ff.put(case, a=a, b=b, y=y, dy=dy, da=ad.grad, db=bd.grad)
    return ff


def make_concat(fi):
    ff = FixtureFile("concat", fi)
    specs = [
        ("three", [("a", (2, 3, 4, 5)), ("b", (2, 5, 4, 5)), ("c", (2, 1, 4, 5))]),
        ("two", [("a", (1, 4, 3, 3)), ("b", (1, 2, 3, 3))]),
    ]
    for name, parts in specs:
        case = ff.case(name, {})
        inputs = {k: randn(*s) for k, s in parts}
        leaves = {k: leaf(v) for k, v in inputs.items()}
        y = torch.cat([leaves[k] for k, _ in parts], dim=1)
        dy = backward_with_dy(y)
        ff.put(case, **inputs)
        ff.put(case, y=y, dy=dy)
        ff.put(case, **{"d" + k: leaves[k].grad for k, _ in parts})
    return ff


def make_channel_shuffle(fi):
    ff = FixtureFile("channel_shuffle", fi)
    for name, g, shape in (("g3", 3, (2, 12, 3, 4)), ("g4", 4, (1, 8, 2, 5))):
        case = ff.case(name, {"groups": g})
        n, c, h, w = shape
        x = randn(*shape)
        xd = leaf(x)
        y = xd.view(n, g, c // g, h, w).transpose(1, 2).reshape(n, c, h, w)
        dy = backward_with_dy(y)
        ff.put(case, x=x, y=y, dy=dy, dx=xd.grad)
    return ff


def make_loss(fi):
    ff = FixtureFile("loss", fi)
    for name, shape in (("lsm", (4, 6)), ("lsm_wide", (3, 1000))):
        case = ff.case(name, {"op": "log_softmax"})
        x = randn(*shape) * 2
        xd = leaf(x)
        y = F.log_softmax(xd, dim=1)
        dy = backward_with_dy(y)
        ff.put(case, x=x, y=y, dy=dy, dx=xd.grad)
    for name, n, k, ls in (("ce", 5, 7, 0.0), ("ce_ls", 8, 10, 0.1),
                           ("ce_big", 4, 1000, 0.0)):
        case = ff.case(name, {"op": "cross_entropy", "label_smoothing": ls})
        logits = randn(n, k) * 2
        target = torch.randint(0, k, (n,))
        ld = leaf(logits)
        loss = F.cross_entropy(ld, target, reduction="mean", label_smoothing=ls)
        loss.backward()
        ff.put(case, logits=logits, target=target.to(torch.float32),
               loss=loss.reshape(1), dlogits=ld.grad)
    return ff


def make_se_block(fi):
    ff = FixtureFile("se_block", fi)
    for name, shape, r in (("c32_r16", (2, 32, 5, 5), 16),
                           ("c64_r4", (1, 64, 3, 4), 4)):
        case = ff.case(name, {"reduction": r})
        c = shape[1]
        hidden = c // r
        x = randn(*shape)
        residual = randn(*shape)
        fc1_w = randn(hidden, c, 1, 1) * 0.3
        fc1_b = randn(hidden) * 0.3
        fc2_w = randn(c, hidden, 1, 1) * 0.3
        fc2_b = randn(c) * 0.3
        xd, rd = leaf(x), leaf(residual)
        w1, b1, w2, b2 = leaf(fc1_w), leaf(fc1_b), leaf(fc2_w), leaf(fc2_b)
        z = F.adaptive_avg_pool2d(xd, 1)
        s = torch.sigmoid(F.conv2d(F.relu(F.conv2d(z, w1, b1)), w2, b2))
        y = F.relu(xd * s + rd)
        dy = backward_with_dy(y)
        ff.put(case, x=x, residual=residual, fc1_w=fc1_w, fc1_b=fc1_b,
               fc2_w=fc2_w, fc2_b=fc2_b, y=y, dy=dy, dx=xd.grad,
               dresidual=rd.grad, dfc1_w=w1.grad, dfc1_b=b1.grad,
               dfc2_w=w2.grad, dfc2_b=b2.grad)
    return ff


def make_reductions(fi):
    ff = FixtureFile("reductions", fi)
    specs = [("mean_hw", "mean", [2, 3], True), ("sum_0", "sum", [0], False),
             ("mean_all", "mean", [0, 1, 2, 3], False)]
    for name, op, axes, keepdim in specs:
        case = ff.case(name, {"op": op, "axes": axes, "keepdim": keepdim})
        x = randn(2, 3, 4, 5)
        xd = leaf(x)
        fn = torch.sum if op == "sum" else torch.mean
        y = fn(xd, dim=axes, keepdim=keepdim)
        if y.dim() == 0:
            y = y.reshape(1)  # scalars are stored with shape [1]
        dy = backward_with_dy(y)
        ff.put(case, x=x, y=y, dy=dy, dx=xd.grad)
    return ff


def make_blocked_layout(fi):
    """Shapes whose channel counts are multiples of 16, for the ops' channel-blocked kernels
    (nChw8c / nChw16c); the Swift tests run them with the inputs in each blocked layout."""
    ff = FixtureFile("blocked_layout", fi)
    for name, shape, training, relu in (("bn_train", (2, 16, 7, 7), True, False),
                                        ("bn_train_relu", (3, 32, 6, 5), True, True),
                                        ("bn_eval", (2, 32, 5, 5), False, False)):
        batchnorm_case(ff, name, shape, training, relu)
    case = ff.case("maxpool_k3_s2_p1", {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1]})
    x = randn(2, 32, 9, 8)
    xd = leaf(x)
    y = F.max_pool2d(xd, 3, 2, 1)
    dy = backward_with_dy(y)
    ff.put(case, x=x, y=y, dy=dy, dx=xd.grad)
    for name, shape, o, k, stride, pad in (("conv_k3_p1", (2, 16, 8, 8), 32, 3, 1, 1),
                                           ("conv_k1_s2", (2, 32, 8, 7), 64, 1, 2, 0)):
        case = ff.case(name, {"stride": [stride, stride], "padding": [pad, pad]})
        x = randn(*shape)
        w = randn(o, shape[1], k, k) * (1.0 / math.sqrt(shape[1] * k * k))
        xd, wd = leaf(x), leaf(w)
        y = F.conv2d(xd, wd, None, stride, pad)
        dy = backward_with_dy(y)
        ff.put(case, x=x, w=w, y=y, dy=dy, dx=xd.grad, dw=wd.grad)
    for name, k, st, pad, ceil, incl in (("avgpool_k3_s1_p1", 3, 1, 1, False, True),
                                         ("avgpool_k3_s2_p1_ceil_excl", 3, 2, 1, True, False),
                                         ("avgpool_global_k4", 4, 4, 0, False, True)):
        case = ff.case(name, {"kernel": [k, k], "stride": [st, st], "padding": [pad, pad],
                              "ceil_mode": ceil, "count_include_pad": incl})
        x = randn(2, 32, 4 if k == 4 else 7, 4 if k == 4 else 6)
        xd = leaf(x)
        y = F.avg_pool2d(xd, k, st, pad, ceil_mode=ceil, count_include_pad=incl)
        dy = backward_with_dy(y)
        ff.put(case, x=x, y=y, dy=dy, dx=xd.grad)
    case = ff.case("concat", {})
    parts = [randn(2, c, 3, 4) for c in (16, 32, 16)]
    leaves = [leaf(p) for p in parts]
    y = torch.cat(leaves, dim=1)
    dy = backward_with_dy(y)
    ff.put(case, a=parts[0], b=parts[1], c=parts[2], y=y, dy=dy,
           da=leaves[0].grad, db=leaves[1].grad, dc=leaves[2].grad)
    return ff


def verify(path, ff):
    """Read the file back with safetensors and compare with what we wrote."""
    from safetensors import safe_open
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
        assert json.loads(meta["cases"]) == ff.cases, path
        for case in ff.cases:
            assert isinstance(json.loads(meta[case]), dict), (path, case)
        keys = set(f.keys())
        assert keys == set(ff.tensors), path
        for key in keys:
            assert key.split(".", 1)[0] in ff.cases, key
            t = f.get_tensor(key)
            assert t.dtype == torch.float32, key
            assert torch.equal(t, ff.tensors[key]), key


GROUPS = [make_conv2d, make_batchnorm, make_activations, make_pooling,
          make_linear, make_broadcast, make_concat, make_channel_shuffle,
          make_loss, make_se_block, make_reductions, make_blocked_layout]


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    total = 0
    for i, make in enumerate(GROUPS, start=1):
        ff = make(i)
        path = ff.write()
        verify(path, ff)
        size = os.path.getsize(path)
        total += size
        print(f"{os.path.relpath(path, ROOT):45s} {len(ff.cases):3d} cases "
              f"{len(ff.tensors):4d} tensors {size / 1024:8.1f} KiB")
    print(f"total {total / 1024:.1f} KiB")
    if total >= 1024 * 1024:
        print("error: fixtures exceed 1 MB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
