"""Whole-slide readers on a synthetic Aperio slide: random tile-sized region reads with OpenSlide, tiffslide, libvips.

Run: python benchmarks/bench_slide_readers.py [--width 24000 --height 18000] [--tiles 1000] [--runs 3]

The slide is the scale benchmark's: an Aperio-style SVS of 24,000 x 18,000 px at 0.25 um/px, levels 1/4/16, JPEG
tiles (256 px, Q90), four tissue islands (slidetiles.slides.write_synthetic_slide, seed 0), written once under
benchmarks/out/ (its writing time and the writer's peak memory are measured in a child process and reported).

Each run reads ``--tiles`` regions of ``--tile-um`` microns (302 um: Slideflow's 299-px tiles at 40x) at random
places on the slide, from the best level for ``--tile-px`` output (the coarsest level that still has at least
``tile-px`` pixels across the region: level 1 here, 302 px), as uint8 RGB numpy arrays. Every reader gets the same
places in a run and each run draws new places, so no reader reads tiles another has just warmed the OS cache for
more than the others do; readers are opened once and run round-robin, one thread each (OpenSlide and libvips keep
their default tile caches, as a tile extractor would). Pixels are checked to agree between readers first.

Measured here (2 cores shared with other jobs, so only ratios within one run mean much; three runs): libvips
(pyvips-binary 8.18, its TIFF loader through a Region) 1.9-2.7x OpenSlide 4.0.1 (123-153 regions/s), tiffslide
3.0.1 0.64-0.84x. 1,000 regions of 302 px at random cover level 1 (6000 x 4500) about 3.4 times over, so the
readers' tile caches matter: these are figures for default caches, not for cold reads. Writing the slide: 17-26 s,
56 MB, ~200 MB peak RSS for 1,236 MB of raw pixels.
"""

from __future__ import annotations

import argparse
import os
import sys

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VIPS_CONCURRENCY"):
    os.environ.setdefault(_var, "1")

import json  # noqa: E402
import math  # noqa: E402
import subprocess  # noqa: E402

import numpy as np  # noqa: E402

from common import OUT, interleaved_medians, save_results, table  # noqa: E402


def ensure_slide(width: int, height: int, seed: int) -> tuple[str, dict]:
    """The benchmark slide (written once, in a child process that reports its time and peak memory)."""
    path = OUT / f"synthetic_aperio_{width}x{height}_seed{seed}.svs"
    info = path.with_suffix(".json")
    if path.exists() and info.exists():
        return str(path), json.loads(info.read_text())
    OUT.mkdir(parents=True, exist_ok=True)
    code = (
        "import json, sys, time\n"
        "from slidetiles.slides import write_synthetic_slide\n"
        "t = time.perf_counter()\n"
        f"s = write_synthetic_slide(sys.argv[1], {width}, {height}, kind='aperio', seed={seed})\n"
        # VmHWM: this process's own peak (ru_maxrss would include the parent's resident size at fork).
        "hwm = [int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
        "print(json.dumps({'write_s': time.perf_counter() - t,\n"
        "                  'peak_rss_mb': hwm / 1024,\n"
        "                  'tissue_fraction': float(s.tissue_mask(16).mean())}))\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(OUT.parent.parent / "lib"), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run([sys.executable, "-c", code, str(path)], check=True, capture_output=True, text=True, env=env)
    stats = json.loads(out.stdout.strip().splitlines()[-1])
    stats.update(file_mb=path.stat().st_size / 2**20, raw_mb=width * height * 3 / 2**20)
    info.write_text(json.dumps(stats))
    return str(path), stats


def make_readers(path: str, level: int):
    """name -> read(x0, y0, w, h) giving (h, w, 3) uint8, level-0 origin, size in pixels of ``level``."""
    readers, skipped = {}, {}
    try:
        import openslide

        slide = openslide.OpenSlide(path)
        ds = slide.level_downsamples[level]

        def read_openslide(x, y, w, h, slide=slide):
            return np.asarray(slide.read_region((x, y), level, (w, h)).convert("RGB"))

        readers["openslide"] = (read_openslide, ds)
    except Exception as exc:  # noqa: BLE001 - a reader that does not load is reported, not fatal
        skipped["openslide"] = repr(exc)
    try:
        import tiffslide

        tslide = tiffslide.TiffSlide(path)

        def read_tiffslide(x, y, w, h, slide=tslide):
            return slide.read_region((x, y), level, (w, h), as_array=True)[..., :3]

        readers["tiffslide"] = (read_tiffslide, tslide.level_downsamples[level])
    except Exception as exc:  # noqa: BLE001
        skipped["tiffslide"] = repr(exc)
    try:
        import pyvips

        # pyvips-binary has no OpenSlide: libvips' own TIFF loader, one page per level (page 1 is the thumbnail).
        page = 0 if level == 0 else level + 1
        image = pyvips.Image.new_from_file(path, page=page, access="random")
        region = pyvips.Region.new(image)
        vds = 1.0 if level == 0 else slide_downsample_from_pages(path, page)

        def read_vips(x, y, w, h, region=region, ds=vds):
            data = region.fetch(int(x / ds), int(y / ds), w, h)
            return np.frombuffer(data, np.uint8).reshape(h, w, 3)

        readers["pyvips"] = (read_vips, vds)
    except Exception as exc:  # noqa: BLE001
        skipped["pyvips"] = repr(exc)
    return readers, skipped


def slide_downsample_from_pages(path: str, page: int) -> float:
    import tifffile

    with tifffile.TiffFile(path) as tf:
        return tf.pages[0].imagewidth / tf.pages[page].imagewidth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=24000)
    parser.add_argument("--height", type=int, default=18000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiles", type=int, default=1000)
    parser.add_argument("--tile-um", type=float, default=302.0)
    parser.add_argument("--tile-px", type=int, default=299)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    path, stats = ensure_slide(args.width, args.height, args.seed)
    print(
        f"slide {path}: {args.width} x {args.height}, {stats['file_mb']:.0f} MB on disk ({stats['raw_mb']:.0f} MB raw), "
        f"written in {stats['write_s']:.1f} s at {stats['peak_rss_mb']:.0f} MB peak RSS, "
        f"tissue {stats['tissue_fraction']:.0%}"
    )

    import tifffile

    with tifffile.TiffFile(path) as tf:
        desc = tf.pages[0].description
        mpp = float(desc.split("MPP = ")[1].split("|")[0])
        downsamples = [args.width / lv.shape[1] for lv in tf.series[0].levels]
    side0 = args.tile_um / mpp  # region side in level-0 pixels
    # The coarsest level that still gives at least tile_px pixels across the region (Slideflow's choice).
    level = max(i for i, d in enumerate(downsamples) if side0 / d >= args.tile_px)
    side = math.ceil(side0 / downsamples[level])
    print(
        f"{args.tiles} regions of {args.tile_um:g} um = {side0:.0f} px at level 0, read at level {level} as {side} px"
    )

    readers, skipped = make_readers(path, level)
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")

    rng = np.random.default_rng(12345)
    span = side * downsamples[level]

    step = int(downsamples[level])

    def places(n):
        # On the level's pixel grid: readers differ in how they round a level-0 origin that falls between
        # level pixels (OpenSlide and tiffslide disagree by one pixel there), and extractors align to it anyway.
        xs = rng.integers(0, int(args.width - span) // step, n) * step
        ys = rng.integers(0, int(args.height - span) // step, n) * step
        return list(zip(xs.tolist(), ys.tolist()))

    check = places(20)
    ref_name = next(iter(readers))
    for x, y in check:
        ref = readers[ref_name][0](x, y, side, side).astype(np.int16)
        for name, (read, _) in readers.items():
            got = read(x, y, side, side)
            assert got.shape == (side, side, 3), (name, got.shape)
            diff = np.abs(got.astype(np.int16) - ref).mean()
            assert diff < 1.0, f"{name} disagrees with {ref_name} at {(x, y)}: mean |diff| {diff:.2f}"

    batches = [places(args.tiles) for _ in range(args.runs + 1)]
    cursor = {name: 0 for name in readers}

    def job(name):
        read = readers[name][0]

        def run():
            batch = batches[cursor[name] % len(batches)]
            cursor[name] += 1
            for x, y in batch:
                read(x, y, side, side)

        return run

    medians = interleaved_medians({name: job(name) for name in readers}, runs=args.runs, warmup=1)
    base = medians.get("openslide")
    rows, results = [], {"slide": stats, "level": level, "region_px": side, "tiles": args.tiles, "readers": {}}
    for name, seconds in sorted(medians.items(), key=lambda kv: kv[1]):
        rate = args.tiles / seconds
        ratio = base / seconds if base else float("nan")
        rows.append([name, rate, side * side * 3 * rate / 2**20, ratio])
        results["readers"][name] = {"seconds": seconds, "tiles_per_s": rate, "x_openslide": ratio}
    print(table(rows, ["reader", "regions/s", "MB/s out", "x OpenSlide"]))
    print(f"results: {save_results('bench_slide_readers', results)}")


if __name__ == "__main__":
    main()
