#!/usr/bin/env python3
"""Generate the ImageIO fixtures: decoded pixels and preprocessed crops from Pillow/torchvision.

Run from anywhere, after `make assets`:  /tmp/torchenv/bin/python Scripts/make_image_fixtures.py
Writes, under Tests/Fixtures/:
  * images_preprocess.safetensors — for real photos in .assets (scikit-image's test photos and the
    first four foolbox ImageNet JPEGs), the output of torchvision's
    `Resize(size, interpolation, antialias=True) -> CenterCrop(crop) -> ToTensor()` (no Normalize)
    on `ImageOps.exif_transpose(Image.open(f)).convert("RGB")`, stored as U8 CHW ([3, crop, crop]):
    ToTensor's output is exactly byte / 255, so the bytes are lossless and 4x smaller than F32;
  * img_*.jpg / img_*.png — tiny synthetic images in the special formats the decoder must handle
    (all eight EXIF orientations, grayscale, CMYK with and without the Adobe marker, progressive,
    alpha, 16-bit, palette with tRNS, 2-bit gray, gray+alpha, Adam7 interlace);
  * images_formats.safetensors — for each img_* file the RGB pixels Pillow decodes
    (`exif_transpose` then `convert("RGB")`), as U8 HWC ([H, W, 3]).

Safetensors conventions as Scripts/make_fixtures.py (keys "<case>.<name>", __metadata__["cases"] a
JSON list in order, __metadata__[<case>] the case's JSON parameters), except the dtype is U8.
Output is deterministic: rerunning rewrites identical bytes (given the same Pillow/torchvision).
"""
import io
import json
import os
import struct
import zlib

import numpy as np
import PIL
import torch
import torchvision
from PIL import Image, ImageOps
from torchvision import transforms as T

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.path.join(ROOT, ".assets")
OUT_DIR = os.path.join(ROOT, "Tests", "Fixtures")


def write_u8_safetensors(path, tensors, metadata):
    """Deterministic safetensors writer for uint8 arrays (tensors sorted by key, header padded to 8)."""
    header = {"__metadata__": metadata}
    blobs, offset = [], 0
    for key in sorted(tensors):
        a = np.ascontiguousarray(tensors[key])
        assert a.dtype == np.uint8, key
        data = a.tobytes()
        header[key] = {"dtype": "U8", "shape": list(a.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    hdr = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hdr += b" " * (-len(hdr) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hdr)))
        f.write(hdr)
        for data in blobs:
            f.write(data)


def pil_rgb(path):
    """What a PyTorch pipeline that honours EXIF sees: exif_transpose, then convert('RGB')."""
    with Image.open(path) as im:
        return ImageOps.exif_transpose(im).convert("RGB")


# ---------------------------------------------------------------------------------------------
# Preprocessing parity on real photos


def preprocess_cases():
    foolbox = sorted(f for f in os.listdir(os.path.join(ASSETS, "foolbox")) if f.startswith("imagenet_"))[:4]
    cases = [(os.path.splitext(f)[0], "skimage/" + f, 256, 224, "bilinear")
             for f in ["chelsea.png", "coffee.png", "astronaut.png", "motorcycle_left.png", "rocket.jpg", "retina.jpg"]]
    cases += [(os.path.splitext(f)[0], "foolbox/" + f, 256, 224, "bilinear") for f in foolbox]
    cases += [
        ("chelsea_bicubic", "skimage/chelsea.png", 256, 224, "bicubic"),
        ("rocket_bicubic", "skimage/rocket.jpg", 256, 224, "bicubic"),
        # Upsampling 32x32 -> 64, and a crop larger than the image (zero padding, odd split).
        ("cifar_upsample", "foolbox/cifar10_00_3.png", 64, 56, "bilinear"),
        ("cifar_padded", "foolbox/cifar10_01_8.png", 20, 27, "bilinear"),
    ]
    modes = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}
    tensors, meta, names = {}, {}, []
    for name, rel, size, crop, interp in cases:
        pipeline = T.Compose([T.Resize(size, interpolation=modes[interp], antialias=True), T.CenterCrop(crop), T.ToTensor()])
        x = pipeline(pil_rgb(os.path.join(ASSETS, rel)))
        u8 = torch.round(x * 255).to(torch.uint8)
        assert torch.equal(u8.to(torch.float32) / 255, x), name  # lossless
        tensors[f"{name}.pixels"] = u8.numpy()
        meta[name] = json.dumps({"file": rel, "resize": size, "crop": crop, "interpolation": interp})
        names.append(name)
    meta["cases"] = json.dumps(names)
    meta["versions"] = json.dumps({"torch": torch.__version__, "torchvision": torchvision.__version__, "pillow": PIL.__version__})
    write_u8_safetensors(os.path.join(OUT_DIR, "images_preprocess.safetensors"), tensors, meta)


# ---------------------------------------------------------------------------------------------
# Special formats


def base_image(w=45, h=30):
    """A small asymmetric test card: gradients plus coloured blocks (orientation is visible)."""
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (w + h - 2)], axis=-1).astype(np.uint8)
    a[2:9, 3:15] = [250, 20, 30]
    a[h - 9:h - 3, w - 12:w - 2] = [20, 40, 230]
    a[12:18, 20:24] = [255, 255, 255]
    return a


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(path, rows, width, height, bit_depth, color_type, extra=b"", interlaced=False, samples=None):
    """A PNG writer for what Pillow cannot write (16-bit RGB, 2-bit gray, Adam7).

    `rows(x0, dx, y0, dy)` returns the filter-free scanline bytes of the (sub)image with those
    origins and steps; filter type 0 throughout.
    """
    passes = [(0, 8, 0, 8), (4, 8, 0, 8), (0, 4, 4, 8), (2, 4, 0, 4), (0, 2, 2, 4), (1, 2, 0, 2), (0, 1, 1, 2)]
    raw = b""
    for x0, dx, y0, dy in (passes if interlaced else [(0, 1, 0, 1)]):
        if x0 >= width or y0 >= height:
            continue
        for line in rows(x0, dx, y0, dy):
            raw += b"\x00" + line
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 1 if interlaced else 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b""))


def strip_jpeg_segment(data, marker):
    """The JPEG bytes without their first segment with the given marker (e.g. 0xEE, Adobe APP14)."""
    pos = 2
    while pos + 4 <= len(data):
        m, length = data[pos + 1], struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if m == marker:
            return data[:pos] + data[pos + 2 + length:]
        if m == 0xDA:
            break
        pos += 2 + length
    raise ValueError("marker not found")


def format_cases():
    a = base_image()
    h, w = a.shape[:2]
    rgb = Image.fromarray(a, "RGB")
    made = []  # (case, file name, reference note or None)

    def out(name):
        return os.path.join(OUT_DIR, name)

    for tag in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = tag
        rgb.save(out(f"img_exif{tag}.jpg"), quality=90, exif=exif.tobytes())
        made.append((f"exif{tag}", f"img_exif{tag}.jpg", None))
    rgb.convert("L").save(out("img_gray.jpg"), quality=90)
    made.append(("gray_jpeg", "img_gray.jpg", None))
    rgb.convert("CMYK").save(out("img_cmyk.jpg"), quality=90)
    made.append(("cmyk_adobe", "img_cmyk.jpg", None))
    with open(out("img_cmyk.jpg"), "rb") as f:
        plain = strip_jpeg_segment(f.read(), 0xEE)
    with open(out("img_cmyk_noadobe.jpg"), "wb") as f:
        f.write(plain)
    made.append(("cmyk_plain", "img_cmyk_noadobe.jpg", None))
    rgb.save(out("img_progressive.jpg"), quality=85, progressive=True, subsampling=0)
    made.append(("progressive_444", "img_progressive.jpg", None))

    alpha = np.linspace(0, 255, w * h).astype(np.uint8).reshape(h, w, 1)
    Image.fromarray(np.concatenate([a, alpha], axis=-1), "RGBA").save(out("img_rgba.png"))
    made.append(("rgba", "img_rgba.png", None))
    Image.fromarray(np.concatenate([a[..., :1], alpha], axis=-1), "LA").save(out("img_la.png"))
    made.append(("gray_alpha", "img_la.png", None))
    rgb.quantize(colors=16).save(out("img_palette.png"), transparency=3)
    made.append(("palette_trns", "img_palette.png", None))

    a16 = a.astype(np.uint16) * 257 + np.arange(w, dtype=np.uint16)[None, :, None] * 3  # low byte varies
    write_png(out("img_rgb16.png"), lambda x0, dx, y0, dy: [a16[y, x0::dx].astype(">u2").tobytes() for y in range(y0, h, dy)],
              w, h, 16, 2)
    made.append(("rgb16", "img_rgb16.png", None))
    g16 = a16[..., 1]
    write_png(out("img_gray16.png"), lambda x0, dx, y0, dy: [g16[y, x0::dx].astype(">u2").tobytes() for y in range(y0, h, dy)],
              w, h, 16, 0)
    made.append(("gray16", "img_gray16.png", "high byte (Pillow's I;16 -> RGB clips to 255 instead)"))
    g2 = (a[..., 0] >> 6).astype(np.uint8)

    def pack2(vals):
        vals = np.concatenate([vals, np.zeros(-len(vals) % 4, np.uint8)])
        return bytes(((vals[0::4] << 6) | (vals[1::4] << 4) | (vals[2::4] << 2) | vals[3::4]).astype(np.uint8))

    write_png(out("img_gray2.png"), lambda x0, dx, y0, dy: [pack2(g2[y, x0::dx]) for y in range(y0, h, dy)], w, h, 2, 0)
    made.append(("gray2", "img_gray2.png", None))
    write_png(out("img_interlaced.png"), lambda x0, dx, y0, dy: [a[y, x0::dx].tobytes() for y in range(y0, h, dy)],
              w, h, 8, 2, interlaced=True)
    made.append(("interlaced", "img_interlaced.png", None))

    tensors, meta, names = {}, {}, []
    for name, file, note in made:
        if name == "gray16":
            pixels = np.repeat((g16 >> 8).astype(np.uint8)[..., None], 3, axis=-1)
        else:
            pixels = np.asarray(pil_rgb(out(file)))
        tensors[f"{name}.rgb"] = pixels
        params = {"file": file}
        if note:
            params["reference"] = note
        meta[name] = json.dumps(params)
        names.append(name)
    meta["cases"] = json.dumps(names)
    write_u8_safetensors(os.path.join(OUT_DIR, "images_formats.safetensors"), tensors, meta)


def main():
    if not os.path.isdir(os.path.join(ASSETS, "skimage")):
        raise SystemExit(f"{ASSETS}/skimage is missing: run `make assets` first")
    os.makedirs(OUT_DIR, exist_ok=True)
    preprocess_cases()
    format_cases()
    total = sum(os.path.getsize(os.path.join(OUT_DIR, f)) for f in os.listdir(OUT_DIR) if f.startswith(("images", "img_")))
    print(f"wrote ImageIO fixtures: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
