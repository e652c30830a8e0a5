"""Tile decoding speed: every JPEG/PNG decoder installed here, on realistic demo tiles, one core.

Run: python benchmarks/bench_decode.py [--tiles 500] [--repeats 5] [--px 299]

Each decoder turns the same tiles (slidetiles.demo, ~26 KB 299-px JPEGs, and the same pixels as PNG) into uint8
HWC RGB arrays; the figure is the median over the repeats of tiles per second, with ratios against Pillow.
Decoders that are not installed (or whose native library does not load) are listed with the reason and skipped.
The process is pinned to one core and told to use one thread, so multi-threaded decoders do not win by using
cores a data loader would give to its other workers.
"""

from __future__ import annotations

import argparse
import os
import sys

# Before any numeric library is imported: one thread everywhere.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
             "TF_NUM_INTEROP_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import io  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from tabulate import tabulate  # noqa: E402


def _pillow(data):
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        if im.mode != "RGB":
            im = im.convert("RGB")
        return np.asarray(im)


def jpeg_decoders():
    """(name, decode function or None, note) for every JPEG candidate."""
    out = [("Pillow", _pillow, "")]

    try:
        import simplejpeg

        out.append(("simplejpeg", lambda d: simplejpeg.decode_jpeg(d, colorspace="RGB"), "libjpeg-turbo, accurate IDCT"))
        out.append((
            "simplejpeg fastdct+fastupsample",
            lambda d: simplejpeg.decode_jpeg(d, colorspace="RGB", fastdct=True, fastupsample=True),
            "not pixel-exact: shown for reference only",
        ))
    except ImportError as e:
        out.append(("simplejpeg", None, f"not installed ({e})"))

    try:
        from turbojpeg import TJPF_RGB, TurboJPEG

        tj = TurboJPEG()
        out.append(("PyTurboJPEG", lambda d: tj.decode(d, pixel_format=TJPF_RGB), ""))
    except Exception as e:  # ImportError, or OSError/RuntimeError when libturbojpeg is missing or too old
        out.append(("PyTurboJPEG", None, f"unavailable: {str(e).splitlines()[0]}"))

    try:
        import cv2

        cv2.setNumThreads(1)
        flag = cv2.IMREAD_COLOR_RGB if hasattr(cv2, "IMREAD_COLOR_RGB") else None
        if flag is not None:
            out.append(("OpenCV imdecode", lambda d: cv2.imdecode(np.frombuffer(d, np.uint8), flag), cv2.__version__))
        else:
            out.append(("OpenCV imdecode", lambda d: cv2.cvtColor(
                cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB), cv2.__version__))
    except ImportError as e:
        out.append(("OpenCV imdecode", None, f"not installed ({e})"))

    try:
        import tensorflow as tf

        out.append(("tf.io.decode_jpeg (eager)", lambda d: tf.io.decode_jpeg(d, channels=3).numpy(),
                    "default dct_method: inexact IDCT"))
    except ImportError as e:
        out.append(("tf.io.decode_jpeg (eager)", None, f"not installed ({e})"))

    try:
        import torch
        import torchvision.io

        out.append(("torchvision decode_jpeg",
                    lambda d: torchvision.io.decode_jpeg(torch.frombuffer(bytearray(d), dtype=torch.uint8)), "CHW"))
    except ImportError as e:
        out.append(("torchvision decode_jpeg", None, f"not installed ({e})"))

    from slidetiles.io.images import decode_image

    out.append(("slidetiles decode_image", decode_image, "what the loaders call"))
    return out


def png_decoders():
    out = [("Pillow", _pillow, "")]
    try:
        import cv2

        flag = cv2.IMREAD_COLOR_RGB if hasattr(cv2, "IMREAD_COLOR_RGB") else cv2.IMREAD_COLOR
        out.append(("OpenCV imdecode", lambda d: cv2.imdecode(np.frombuffer(d, np.uint8), flag), cv2.__version__))
    except ImportError as e:
        out.append(("OpenCV imdecode", None, f"not installed ({e})"))
    try:
        import tensorflow as tf

        out.append(("tf.io.decode_png (eager)", lambda d: tf.io.decode_png(d, channels=3).numpy(), ""))
    except ImportError as e:
        out.append(("tf.io.decode_png (eager)", None, f"not installed ({e})"))
    from slidetiles.io.images import decode_image

    out.append(("slidetiles decode_image", decode_image, "what the loaders call"))
    return out


def bench(decoders, tiles, repeats, reference):
    rows = []
    base = None
    for name, fn, note in decoders:
        if fn is None:
            rows.append([name, "-", "-", f"skipped: {note}"])
            continue
        try:
            first = np.asarray(fn(tiles[0]))
        except Exception as e:
            rows.append([name, "-", "-", f"failed: {type(e).__name__}: {e}"])
            continue
        if first.shape[-1] != 3 and first.shape[0] == 3:  # CHW
            first = first.transpose(1, 2, 0)
        diff = int(np.abs(first.astype(np.int16) - reference.astype(np.int16)).max())
        for t in tiles[:20]:  # warm-up: lazy library loading, caches
            fn(t)
        rates = []
        for _ in range(repeats):
            start = time.perf_counter()
            for t in tiles:
                fn(t)
            rates.append(len(tiles) / (time.perf_counter() - start))
        rate = statistics.median(rates)
        if name == "Pillow":
            base = rate
        rows.append([name, f"{rate:,.0f}", rate, (note + "; " if note else "") + f"max |diff| vs Pillow {diff}"])
    for row in rows:
        if isinstance(row[2], float):
            row[2] = f"{row[2] / base:.2f}x" if base else "-"
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--px", type=int, default=299)
    args = parser.parse_args(argv)

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    from PIL import Image

    from slidetiles.demo import iter_tiles

    jpegs = list(iter_tiles(0, args.tiles, px=args.px))
    pngs = []
    for j in jpegs:
        buf = io.BytesIO()
        Image.open(io.BytesIO(j)).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    headers = ["decoder", "tiles/s", "vs Pillow", "notes"]
    for kind, tiles, decoders in (("JPEG", jpegs, jpeg_decoders()), ("PNG", pngs, png_decoders())):
        size = statistics.mean(map(len, tiles)) / 1024
        print(f"\n{kind}: {len(tiles)} tiles, {args.px} px, mean {size:.1f} KiB; median of {args.repeats} runs, one core")
        print(tabulate(bench(decoders, tiles, args.repeats, _pillow(tiles[0])), headers=headers,
                       colalign=("left", "right", "right", "left")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
