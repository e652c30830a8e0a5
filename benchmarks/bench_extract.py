"""Tile extraction, one slide to one TFRecord: slidetiles vs Slideflow 3.0.2, a lab script and the ceiling.

Run: python benchmarks/bench_extract.py [--width 24000 --height 18000] [--runs 3] [--lab-level0-runs 1]
     [--settings 299:302,256:128]

The slide is a synthetic pyramidal TIFF of 24,000 x 18,000 px at 0.25 um/px, levels 1/4/16, four tissue islands,
256-px JPEG tiles (written once under benchmarks/out/ by :func:`slidetiles.slides.write_synthetic_slide`, streamed:
never held in memory), the geometry of issue #11's Aperio test slide. It is a plain pyramidal TIFF, not an .svs:
Slideflow 3.0.2's libvips backend takes an Aperio file's thumbnail page for a fourth pyramid level, judges
background on it, and fails there ("tiff2vips: out of order read", the thumbnail being stored in strips), so it
cannot extract an .svs written this way at all. Each setting (299 px / 302 um: read from the 4x level; 256 px /
128 um: read from level 0, as no 2x level exists) is extracted with Slideflow's default background filter
(grayspace fraction 0.6 at saturation 0.05, judged on the coarse level), so every contender keeps the same tiles:

- (a) ``slideflow``: Slideflow's own ``WSI(...).extract_tiles(dir, num_threads=1, shuffle=False)`` (libvips
  backend, its real code loaded by tests/slideflow_ref.py; its process pool cannot start from the bare reference
  package, so one process);
- ``slidetiles``: ``WSI(...).extract_tiles(dir, num_threads=T)`` for T = 1 and 2;
- (b) ``lab_script``: OpenSlide ``read_region`` per tile, Pillow Lanczos resize and JPEG encode (quality 95),
  every grid tile, no filter, into a TFRecord; from the best level (every run) and from level 0 (timed
  ``--lab-level0-runs`` times, outside the interleaving: it takes ~10x longer);
- (c) ``ceiling``: decode (simplejpeg, libjpeg-turbo) each source JPEG tile of the read level that the kept tiles
  cover, once, and encode the kept tiles (OpenCV, quality 95): nothing else (no judging, no resize, no write);
  the raw tile bytes and the tiles to encode are prepared untimed. On 1 and on 2 threads.
- (d) ``ceiling_with_resize``: the ceiling plus libvips' Lanczos-3 resize of each kept tile's level region
  (prepared untimed), which Slideflow's bytes need: the floor of any extractor writing those bytes.

A one-thread stage profile (:func:`stage_profile`) splits one extraction into background judging, reading the
kept tiles' regions (decoding), the resize, the encode and the TFRecord write.

Runs are interleaved round-robin, after one warm-up round; medians. Per slide and per kept tile; ``x Slideflow``
= Slideflow's time / this one's; ``of ceiling`` (``of ceiling+resize``) = the ceiling's (with resize) time on the
same threads / this one's. Peak RSS
(VmHWM of /proc/self/status) is measured in fresh subprocesses extracting this slide and one 4x smaller
(12,000 x 9,000), on 2 threads. The machine has 2 cores, shared with other jobs during these runs: ratios from
one run are what mean something; absolute seconds drift. VIPS_CONCURRENCY=1 (set unless given), so "1t" is one
thread inside libvips too, for Slideflow as for slidetiles.

Measured here (three sessions of 3 interleaved runs, other jobs on the machine, load average 1.1-3.7; the first
with a 24 MB decoded-tile cache, since 8 MB):

- 299 px / 302 um (266 grid tiles, 75 kept, the same 75 as Slideflow, same bytes): Slideflow 1.47-2.12 s;
  slidetiles 1 thread 0.38-0.93 s (2.27-3.85x), 2 threads 0.37-0.59 s (2.87-4.19x); ceiling 1.4-2.1 ms a kept tile,
  with resize 4.0-4.5 ms: slidetiles reaches 0.17-0.34 of the ceiling, 0.36-0.89 of the ceiling with resize.
- 256 px / 128 um (1,610 grid tiles, read from level 0; 391 kept, Slideflow 389: two tiles with grayspace 0.590
  and 0.600 that Slideflow's libvips backend, rounding saturation to 8 bits, drops; bytes equal on the 389):
  Slideflow 7.45-8.74 s; slidetiles 1 thread 2.57-3.01 s (2.87-2.91x), 2 threads 2.51-2.96 s (2.79-2.97x);
  ceiling 1.5-1.9 ms a kept tile, with resize 4.4-5.1 ms: 0.23-0.30 of the ceiling, 0.67-0.73 with resize.
- Stage profile, ms a kept tile on one thread: 299 px background 0.5, read + decode 0.9-1.2, resize 2.0-2.6,
  encode 0.7-0.8, write 0.1; 256 px background 0.1, read + decode 1.9-2.2, resize 3.0-4.6, encode 0.3-0.5,
  write 0.1. The resize, which the ceiling leaves out, is half the time or more.
- 2 threads vs 1: 1.35-1.57x at 299 px in two sessions, 0.75x in the third, 0.97-1.02x at 256 px; the ceiling
  0.83-1.19x in the same sessions (the second core was busy with other jobs).
- Peak RSS on 2 threads (fresh process, 118 MB after imports): 24,000 x 18,000 148-168 MB vs 12,000 x 9,000
  138-158 MB: +7 to +10 MB for 4x the area (+24 MB at 299 px with the 24 MB cache).
- Before the decode-once reader and per-tile resizes (one session, load 4-5): 2.00x / 2.05x Slideflow at 299 px
  (1 / 2 threads), 1.27x / 1.62x at 256 px, 0.11-0.15 of the ceiling, peak RSS +12 to +16 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VIPS_CONCURRENCY"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import logging  # noqa: E402
import shutil  # noqa: E402

import numpy as np  # noqa: E402

from common import OUT, interleaved_medians, median_time, save_results, table  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

QUALITY = 95


def ensure_slide(width: int, height: int) -> str:
    from slidetiles.slides import write_synthetic_slide

    path = OUT / f"synthetic_plain_{width}x{height}_seed0.tiff"
    if not path.exists():
        write_synthetic_slide(path, width, height, kind="plain", levels=(1, 4, 16), seed=0)
    return str(path)


def lab_script(path: str, tile_px: int, tile_um: int, out: str, level0: bool) -> int:
    """What a lab would write with OpenSlide and Pillow: every grid tile, read, resized, encoded."""
    import openslide
    from PIL import Image

    from slidetiles.io.writer import TFRecordWriter

    slide = openslide.OpenSlide(path)
    mpp = float(slide.properties["openslide.mpp-x"])
    full = int(tile_um / mpp)
    level = 0 if level0 else slide.get_best_level_for_downsample(full / tile_px)
    n = int(full // slide.level_downsamples[level])
    w, h = slide.dimensions
    count = 0
    with TFRecordWriter(out) as writer:
        for y in range(0, h + 1 - full, full):
            for x in range(0, w + 1 - full, full):
                region = slide.read_region((x, y), level, (n, n)).convert("RGB")
                region = region.resize((tile_px, tile_px), Image.LANCZOS)
                buf = __import__("io").BytesIO()
                region.save(buf, "JPEG", quality=QUALITY)
                writer.write_tile(buf.getvalue(), "s", x + full // 2, y + full // 2)
                count += 1
    slide.close()
    return count


def ceiling_inputs(path: str, tile_px: int, tile_um: int):
    """Raw bytes of the source JPEG tiles the kept tiles cover (each once) and the kept tiles, in BGR."""
    import cv2
    import tifffile

    from slidetiles.slides.extract import read_tiles, slide_background_fractions
    from slidetiles.slides.wsi import WSI

    wsi = WSI(path, tile_px, tile_um)
    corners = wsi.kept_corners()
    _, gray = slide_background_fractions(wsi, corners, 230, 0.05)
    corners = corners[gray <= 0.6]
    size = wsi.size
    with tifffile.TiffFile(path) as tif:
        page = tif.series[0].levels[size.level].keyframe
        tw, th = page.tilewidth, page.tilelength
        lw, lh = wsi.level_dimensions[size.level]
        across = -(-lw // tw)
        covered = set()
        for x, y in (corners // size.level_downsample).astype(np.int64).tolist():
            x1, y1 = min(x + size.extract_px, lw) - 1, min(y + size.extract_px, lh) - 1
            for row in range(y // th, y1 // th + 1):
                covered.update(row * across + col for col in range(x // tw, x1 // tw + 1))
        raw = []
        for index in sorted(covered):
            tif.filehandle.seek(page.dataoffsets[index])
            raw.append(tif.filehandle.read(page.databytecounts[index]))
    tiles = [cv2.cvtColor(t, cv2.COLOR_RGB2BGR) for t in read_tiles(wsi, corners)]
    ds = size.level_downsample
    regions = [wsi.reader.read(size.level, int(x // ds), int(y // ds), size.extract_px, size.extract_px)
               for x, y in corners.tolist()]
    return raw, tiles, len(corners), (regions, size)


def ceiling(raw, tiles, threads: int, resize=None) -> None:
    """The ceiling; with ``resize`` (the kept tiles' level regions and the tile size), also the libvips Lanczos-3
    resize of each region that makes the bytes Slideflow's: the floor of any extractor writing those bytes."""
    import cv2
    import pyvips
    import simplejpeg

    from slidetiles.slides.extract import resize_tile

    def decode(data):
        return simplejpeg.decode_jpeg(data, colorspace="RGB").shape

    def encode(tile):
        return len(cv2.imencode(".jpg", tile, [cv2.IMWRITE_JPEG_QUALITY, QUALITY])[1])

    def shrink(region):
        n = resize[1].extract_px
        return len(resize_tile(pyvips.Image.new_from_memory(region.data, n, n, 3, "uchar"), resize[1]).write_to_memory())

    if threads <= 1:
        list(map(decode, raw))
        if resize:
            list(map(shrink, resize[0]))
        list(map(encode, tiles))
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(decode, raw, chunksize=8))
        if resize:
            list(pool.map(shrink, resize[0], chunksize=8))
        list(pool.map(encode, tiles, chunksize=8))


def stage_profile(path: str, tile_px: int, tile_um: int, runs: int = 3) -> dict:
    """Seconds (best of ``runs``, one thread) of each stage of one extraction, done as extract_tiles does it but
    one stage at a time: background judging, reading the kept tiles' regions (source JPEG tiles decoded once),
    the libvips resize, the JPEG encode, the TFRecord write. Their sum is near extract_tiles' own time."""
    import time

    import pyvips

    from slidetiles.io.writer import TFRecordWriter
    from slidetiles.slides import extract
    from slidetiles.slides.wsi import WSI

    def best(function):
        seconds = []
        for _ in range(runs):
            start = time.perf_counter()
            result = function()
            seconds.append(time.perf_counter() - start)
        return min(seconds), result

    pyvips.cache_set_max(0)
    wsi = WSI(path, tile_px, tile_um)
    size, n = wsi.size, wsi.size.extract_px
    corners = wsi.kept_corners()
    out = {}
    out["background"], (_, gray) = best(lambda: extract.slide_background_fractions(wsi, corners, 230, 0.05))
    corners = corners[gray <= 0.6]
    runs_ = list(extract._runs(corners, size.level_downsample, n, n * extract.RUN_TILES, n // 4))

    def read():
        wsi.reader.close()  # an empty decoded-tile cache each time: every source tile decoded as in one extraction
        return [wsi.reader.read(size.level, x0, y0, width, n) for _, _, x0, y0, width in runs_]

    out["read_decode"], regions = best(read)
    offsets = (corners[:, 0] // size.level_downsample).astype(np.int64).tolist()

    def resize():
        tiles = []
        for (start, stop, x0, _, width), region in zip(runs_, regions):
            image = pyvips.Image.new_from_memory(region.data, width, n, 3, "uchar")
            for x in offsets[start:stop]:
                data = extract.resize_tile(image.crop(x - x0, 0, n, n), size).write_to_memory()
                tiles.append(np.frombuffer(data, np.uint8).reshape(tile_px, tile_px, 3))
        return tiles

    out["resize"], tiles = best(resize)
    out["encode"], encoded = best(lambda: [extract.encode_tile(t) for t in tiles])

    def write():
        with tempfile.TemporaryDirectory() as folder:
            with TFRecordWriter(os.path.join(folder, "s.tfrecords")) as writer:
                for data in encoded:
                    writer.write_tile(data, "s", 0, 0)

    out["tfrecord_write"], _ = best(write)
    total = sum(out.values())
    return {"seconds": out, "fractions": {k: v / total for k, v in out.items()}, "kept": len(corners),
            "ms_per_kept_tile": {k: 1000 * v / len(corners) for k, v in out.items()}}


def rss_child(path: str, tile_px: int, tile_um: int, threads: int) -> None:
    """Peak RSS of one extraction in this (fresh) process, before and after: printed as JSON."""
    def hwm():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024

    logging.disable(logging.WARNING)
    from slidetiles.slides import background
    from slidetiles.slides.wsi import WSI

    background._grayspace_table(background.DEFAULT_GRAYSPACE_THRESHOLD)
    before = hwm()
    with tempfile.TemporaryDirectory() as out:
        report = WSI(path, tile_px, tile_um).extract_tiles(out, num_threads=threads)
    print(json.dumps({"before_mb": before, "peak_mb": hwm(), "tiles": report.num_tiles}))


def peak_rss(path: str, tile_px: int, tile_um: int, threads: int) -> dict:
    command = [sys.executable, __file__, "--rss-child", path, str(tile_px), str(tile_um), str(threads)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def bench_setting(sf, sf_slide, path: str, tile_px: int, tile_um: int, runs: int, lab0_runs: int, scratch: str):
    from slidetiles.slides.wsi import WSI
    from slidetiles.tfrecord import TFRecord

    name = os.path.basename(path).rsplit(".", 1)[0]
    counts = {}

    def ours(threads):
        def go():
            out = os.path.join(scratch, f"ours{threads}")
            shutil.rmtree(out, ignore_errors=True)
            report = WSI(path, tile_px, tile_um).extract_tiles(out, num_threads=threads)
            counts[f"slidetiles_{threads}t"] = report.num_tiles
        return go

    def slideflow():
        out = os.path.join(scratch, "sf")
        shutil.rmtree(out, ignore_errors=True)
        wsi = sf_slide.WSI(path, tile_px, tile_um, verbose=False)
        wsi.extract_tiles(tfrecord_dir=out, num_threads=1, report=False, shuffle=False)
        counts["slideflow"] = len(sf.TFRecord(os.path.join(out, name + ".tfrecords")))

    def lab(level0):
        def go():
            key = "lab_script_level0" if level0 else "lab_script_best_level"
            counts[key] = lab_script(path, tile_px, tile_um, os.path.join(scratch, key + ".tfrecords"), level0)
        return go

    raw, tiles, kept, regions = ceiling_inputs(path, tile_px, tile_um)
    functions = {
        "slideflow": slideflow,
        "slidetiles_1t": ours(1),
        "slidetiles_2t": ours(2),
        "lab_script_best_level": lab(False),
        "ceiling_1t": lambda: ceiling(raw, tiles, 1),
        "ceiling_2t": lambda: ceiling(raw, tiles, 2),
        "ceiling_with_resize_1t": lambda: ceiling(raw, tiles, 1, regions),
        "ceiling_with_resize_2t": lambda: ceiling(raw, tiles, 2, regions),
    }
    times = interleaved_medians(functions, runs=runs)
    if lab0_runs:
        times["lab_script_level0"] = median_time(lab(True), runs=lab0_runs, warmup=0)
    for key in ("ceiling_1t", "ceiling_2t", "ceiling_with_resize_1t", "ceiling_with_resize_2t"):
        counts[key] = kept

    # Same tiles kept, same bytes: the comparison is of equal work.
    def tiles_of(records):
        return {(r["loc_x"], r["loc_y"]): r["image_raw"] for r in records}

    theirs = tiles_of(sf.TFRecord(os.path.join(scratch, "sf", name + ".tfrecords")))
    mine = tiles_of(TFRecord(os.path.join(scratch, "ours2", name + ".tfrecords")))
    grid = len(WSI(path, tile_px, tile_um).coord)
    common = set(theirs) & set(mine)
    result = {"grid_tiles": grid, "kept_tiles": kept, "same_tiles_as_slideflow": set(theirs) == set(mine),
              "kept_only_by_slidetiles": sorted(set(mine) - set(theirs)),
              "kept_only_by_slideflow": sorted(set(theirs) - set(mine)),
              "same_bytes_as_slideflow_on_common_tiles": all(theirs[k] == mine[k] for k in common),
              "source_jpeg_tiles_decoded_by_ceiling": len(raw), "extractors": {}}
    rows = []
    for key, seconds in times.items():
        threads = 2 if key.endswith("2t") else 1
        ceiling_s = times[f"ceiling_{threads}t"]
        floor_s = times[f"ceiling_with_resize_{threads}t"]
        entry = {"seconds": seconds, "tiles_written": counts[key], "ms_per_kept_tile": 1000 * seconds / kept,
                 "x_slideflow": times["slideflow"] / seconds, "of_ceiling": ceiling_s / seconds,
                 "of_ceiling_with_resize": floor_s / seconds}
        result["extractors"][key] = entry
        rows.append([f"{tile_px}px/{tile_um}um", key, counts[key], seconds, entry["ms_per_kept_tile"],
                     entry["x_slideflow"], entry["of_ceiling"], entry["of_ceiling_with_resize"]])
    result["thread_scaling_slidetiles"] = times["slidetiles_1t"] / times["slidetiles_2t"]
    result["thread_scaling_ceiling"] = times["ceiling_1t"] / times["ceiling_2t"]
    return result, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=24000)
    parser.add_argument("--height", type=int, default=18000)
    parser.add_argument("--settings", default="299:302,256:128", help="tile_px:tile_um pairs")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lab-level0-runs", type=int, default=1)
    parser.add_argument("--rss-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        path, px, um, threads = args.rss_child
        rss_child(path, int(px), int(um), int(threads))
        return
    logging.disable(logging.WARNING)

    import importlib

    import slideflow_ref

    sf = slideflow_ref.load()
    sf_slide = importlib.import_module("slideflow.slide")
    path = ensure_slide(args.width, args.height)
    small = ensure_slide(args.width // 2, args.height // 2)
    scratch = tempfile.mkdtemp(prefix="bench_extract-")
    results = {"slide": {"path": path, "width": args.width, "height": args.height, "levels": [1, 4, 16], "mpp": 0.25},
               "cpus": len(os.sched_getaffinity(0)), "settings": {}}
    rows, checks = [], []
    try:
        for setting in args.settings.split(","):
            tile_px, tile_um = (int(v) for v in setting.split(":"))
            result, setting_rows = bench_setting(sf, sf_slide, path, tile_px, tile_um, args.runs,
                                                 args.lab_level0_runs, scratch)
            result["peak_rss_mb_2_threads"] = {
                f"{args.width}x{args.height}": peak_rss(path, tile_px, tile_um, 2),
                f"{args.width // 2}x{args.height // 2}": peak_rss(small, tile_px, tile_um, 2),
            }
            result["stage_profile_1_thread"] = stage_profile(path, tile_px, tile_um)
            results["settings"][setting] = result
            rows.extend(setting_rows)
            rss = result["peak_rss_mb_2_threads"]
            checks.append(
                f"{tile_px}px/{tile_um}um: {result['grid_tiles']} grid tiles, {result['kept_tiles']} kept; same tiles "
                f"as Slideflow {result['same_tiles_as_slideflow']} (only ours: {result['kept_only_by_slidetiles']}, "
                f"only Slideflow's: {result['kept_only_by_slideflow']}), same bytes on the tiles both keep "
                f"{result['same_bytes_as_slideflow_on_common_tiles']}; "
                f"2 threads vs 1: slidetiles {result['thread_scaling_slidetiles']:.2f}x, ceiling "
                f"{result['thread_scaling_ceiling']:.2f}x; peak RSS (MB, before -> after extraction) "
                + ", ".join(f"{k}: {v['before_mb']:.0f} -> {v['peak_mb']:.0f}" for k, v in rss.items())
                + "; stages, one thread (ms per kept tile, share): "
                + ", ".join(f"{k} {result['stage_profile_1_thread']['ms_per_kept_tile'][k]:.2f} ({f:.0%})"
                            for k, f in result["stage_profile_1_thread"]["fractions"].items())
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(table(rows, ["setting", "extractor", "tiles written", "s/slide", "ms/kept tile", "x Slideflow",
                       "of ceiling", "of ceiling+resize"]))
    print("\n".join(checks))
    print("saved", save_results("bench_extract", results))


if __name__ == "__main__":
    main()
