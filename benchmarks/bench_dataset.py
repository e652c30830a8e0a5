"""A Dataset over 10,000 TFRecords: construction, manipulation, manifest and summary; seconds and file opens.

Usage: python benchmarks/bench_dataset.py [--slides 10000] [--max-tiles 40] [--jobs N] [--dir DIR] [--no-strace]

Generates ``--slides`` tiny TFRecords (1..max-tiles records of a 64-byte JPEG-looking payload, real framing and
CRCs, real locations) with current ``.index.npz`` files and an annotations CSV under a temporary folder, then
times, in this process:

1. ``Dataset(...)`` with every index current (tile counts read from index headers only);
2. ``filter().clip(strategy='patient').balance('label')`` + ``manifest()`` + ``summary()`` on the result;
3. ``to_manifest()`` and ``Dataset.from_manifest(check=True)``;
4. ``Dataset(...)`` again after deleting every index (built in ``--jobs`` processes with a progress bar).

File opens are counted with a Python audit hook (``open`` events: ``open()``, ``io.open``, ``os.open``) in this
process; with strace installed each phase is also run in a child process under ``strace -f -c -e trace=openat``,
which counts the opens of the pool's worker processes too (minus a baseline of interpreter start and imports).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import numpy as np  # noqa: E402

LABEL = "299px_302um"
#: Fixed mtime of every generated TFRecord, so indexes of files with the same tile count are byte-identical.
MTIME_NS = 1_700_000_000_000_000_000
PAYLOAD = b"\xff\xd8\xff\xe0" + bytes(60)


class OpenCounter:
    """Counts ``open`` audit events (audit hooks cannot be removed, so counting is switched on and off)."""

    def __init__(self):
        self.active = False
        self.count = 0
        sys.addaudithook(self._hook)

    def _hook(self, event, args):
        if self.active and event == "open":
            self.count += 1

    def __enter__(self):
        self.count = 0
        self.active = True
        return self

    def __exit__(self, *exc):
        self.active = False


def generate(root: str, n_slides: int, max_tiles: int, seed: int = 0) -> tuple[str, str]:
    """Write the TFRecords, current indexes and annotations; returns (tfrecords folder, annotations CSV)."""
    from slidetiles.io.example import tile_example
    from slidetiles.io.framing import encode_frame
    from slidetiles.io.tfrecord2idx import create_index

    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "tfrecords", LABEL)
    os.makedirs(folder, exist_ok=True)
    counts = rng.integers(1, max_tiles + 1, n_slides)
    index_blobs: dict[int, bytes] = {}
    rows = ["patient,slide,site,label"]
    patient = 0
    for i, k in enumerate(counts.tolist()):
        slide = f"slide_{i:06d}"  # fixed width: same tile count -> same file size -> same index bytes
        frames = [encode_frame(tile_example(PAYLOAD, slide, 302 * j, 604)) for j in range(k)]
        data = b"".join(frames)
        path = os.path.join(folder, slide + ".tfrecords")
        with open(path, "wb") as f:
            f.write(data)
        os.utime(path, ns=(MTIME_NS, MTIME_NS))
        index_file = os.path.join(folder, slide + ".index.npz")
        if k not in index_blobs:
            # The library's own writer, once per tile count; files with the same count then get a copy.
            create_index(path)
            with open(index_file, "rb") as f:
                index_blobs[k] = f.read()
        else:
            with open(index_file, "wb") as f:
                f.write(index_blobs[k])
        # A slide joins the previous slide's patient one time in three; one slide in 50 has a blank label.
        if i == 0 or rng.random() >= 0.33:
            patient += 1
        label = "" if i % 50 == 7 else ("tumor" if rng.random() < 0.4 else "normal")
        rows.append(f"patient_{patient:06d},{slide},site_{'ABCDE'[patient % 5]},{label}")
    # A few annotated slides without TFRecords, as in real cohorts.
    rows += [f"patient_x{j},missing_{j},site_A,tumor" for j in range(5)]
    csv_path = os.path.join(root, "annotations.csv")
    with open(csv_path, "w") as f:
        f.write("\n".join(rows) + "\n")
    return os.path.join(root, "tfrecords"), csv_path


def phase_current(tfrecords: str, csv: str, jobs: int | None) -> dict:
    import slidetiles

    t = time.perf_counter()
    ds = slidetiles.Dataset(tfrecords=tfrecords, tile_px=299, tile_um=302, annotations=csv, jobs=jobs)
    ds.num_tiles
    return {"seconds": time.perf_counter() - t, "tfrecords": len(ds.tfrecords()), "tiles": ds.num_tiles}


def phase_chain(tfrecords: str, csv: str, jobs: int | None, manifest_path: str) -> dict:
    import slidetiles

    ds = slidetiles.Dataset(tfrecords=tfrecords, tile_px=299, tile_um=302, annotations=csv, jobs=jobs)
    t = time.perf_counter()
    out = ds.filter(filter_blank="label", min_tiles=2).clip(20, strategy="patient").balance("label")
    manifest = out.manifest()
    text = out.summary(show=False)
    chain = time.perf_counter() - t
    t = time.perf_counter()
    out.to_manifest(manifest_path)
    write = time.perf_counter() - t
    t = time.perf_counter()
    back = slidetiles.Dataset.from_manifest(manifest_path, check=True)
    load = time.perf_counter() - t
    assert back.manifest() == manifest
    return {"chain_seconds": chain, "write_seconds": write, "load_seconds": load, "summary_lines": text.count("\n"),
            "retained": len(manifest), "manifest_bytes": os.path.getsize(manifest_path)}


def phase_missing(tfrecords: str, csv: str, jobs: int | None) -> dict:
    import slidetiles

    folder = os.path.join(tfrecords, LABEL)
    for name in os.listdir(folder):
        if name.endswith(".index.npz"):
            os.unlink(os.path.join(folder, name))
    t = time.perf_counter()
    ds = slidetiles.Dataset(tfrecords=tfrecords, tile_px=299, tile_um=302, annotations=csv, jobs=jobs)
    return {"seconds": time.perf_counter() - t, "tfrecords": len(ds.tfrecords()), "tiles": ds.num_tiles}


def phase_build_speed(root: str, n_files: int, tiles: int, tile_bytes: int) -> dict:
    """Index building of realistic-size TFRecords (CRC checks dominate): 1 process vs all cores."""
    from slidetiles.dataset.tilecounts import count_tiles
    from slidetiles.io.writer import TFRecordWriter

    folder = os.path.join(root, "big")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(1)
    paths = []
    for i in range(n_files):
        path = os.path.join(folder, f"big_{i:03d}.tfrecords")
        with TFRecordWriter(path) as writer:
            for j in range(tiles):
                writer.write_tile(PAYLOAD + rng.bytes(tile_bytes - len(PAYLOAD)), f"big_{i:03d}", j, 0)
        paths.append(path)
    megabytes = sum(os.path.getsize(p) for p in paths) / 1e6
    out = {"files": n_files, "megabytes": round(megabytes, 1)}
    for jobs in sorted({1, os.cpu_count() or 1}):
        for p in paths:
            if os.path.exists(p[: -len(".tfrecords")] + ".index.npz"):
                os.unlink(p[: -len(".tfrecords")] + ".index.npz")
        entries = [(p, os.path.getsize(p), os.stat(p).st_mtime_ns, None) for p in paths]
        t = time.perf_counter()
        counts, errors = count_tiles(entries, jobs=jobs)
        out[f"jobs_{jobs}_seconds"] = time.perf_counter() - t
        assert not errors and sum(c[0] for c in counts.values()) == n_files * tiles
    shutil.rmtree(folder)
    return out


def strace_opens(args: list[str]) -> int | None:
    """openat calls of ``python bench_dataset.py <args>`` and all its children, or None without strace."""
    if shutil.which("strace") is None:
        return None
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        subprocess.run(
            ["strace", "-f", "-c", "-e", "trace=openat,open", "-o", out.name, sys.executable, __file__, *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        total = 0
        for line in out.read().splitlines():
            parts = line.split()
            if parts and parts[-1] in ("openat", "open"):
                total += int(parts[3])  # % time, seconds, usecs/call, calls, [errors], syscall
        return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slides", type=int, default=10_000)
    parser.add_argument("--max-tiles", type=int, default=40)
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--dir", help="work folder (default: a temporary folder, removed afterwards)")
    parser.add_argument("--no-strace", action="store_true")
    parser.add_argument("--big-files", type=int, default=8, help="realistic TFRecords for the parallel build timing")
    parser.add_argument("--big-tiles", type=int, default=400, help="25 KB tiles in each of them")
    parser.add_argument("--phase", help=argparse.SUPPRESS)  # child process under strace
    ns = parser.parse_args()

    if ns.phase:
        root = ns.dir
        tfrecords, csv = os.path.join(root, "tfrecords"), os.path.join(root, "annotations.csv")
        if ns.phase == "current":
            phase_current(tfrecords, csv, ns.jobs)
        elif ns.phase == "missing":
            phase_missing(tfrecords, csv, ns.jobs)
        elif ns.phase == "baseline":
            import slidetiles.dataset  # noqa: F401  (slidetiles itself imports Dataset lazily, on first use)
        return 0

    root = ns.dir or tempfile.mkdtemp(prefix="bench_dataset_")
    try:
        t = time.perf_counter()
        tfrecords, csv = generate(root, ns.slides, ns.max_tiles)
        print(f"generated {ns.slides} TFRecords + indexes in {time.perf_counter() - t:.1f} s under {root}")
        # Imports outside the timings and the open counts: slidetiles itself imports Dataset lazily, on first use.
        import slidetiles.dataset  # noqa: F401

        counter = OpenCounter()
        with counter:
            current = phase_current(tfrecords, csv, ns.jobs)
        current["opens"] = counter.count
        with counter:
            chain = phase_chain(tfrecords, csv, ns.jobs, os.path.join(root, "manifest.json"))
        chain["opens_incl_construction"] = counter.count
        strace_current = None if ns.no_strace else strace_opens(["--phase", "current", "--dir", root])
        strace_base = None if ns.no_strace else strace_opens(["--phase", "baseline", "--dir", root])
        with counter:
            missing = phase_missing(tfrecords, csv, ns.jobs)
        missing["opens_this_process"] = counter.count
        strace_missing = None
        if not ns.no_strace and strace_base is not None:
            strace_missing = strace_opens(["--phase", "missing", "--dir", root])

        build = phase_build_speed(root, ns.big_files, ns.big_tiles, 25_000)

        print(f"\nDataset over {current['tfrecords']} TFRecords ({current['tiles']} tiles), {os.cpu_count()} cores")
        print(f"  construction, indexes current : {current['seconds']:.2f} s, {current['opens']} file opens")
        print(f"  filter+clip+balance+manifest+summary: {chain['chain_seconds']:.3f} s "
              f"({chain['retained']} TFRecords retained)")
        print(f"  to_manifest                   : {chain['write_seconds']:.3f} s ({chain['manifest_bytes']} bytes)")
        print(f"  from_manifest(check=True)     : {chain['load_seconds']:.3f} s")
        print(f"  opens, construction+chain+manifest write+load: {chain['opens_incl_construction']}")
        print(f"  construction, indexes missing : {missing['seconds']:.2f} s "
              f"({missing['opens_this_process']} opens in this process; indexes built in worker processes)")
        if strace_base is not None:
            print(f"  strace openat, construction with indexes current: {strace_current - strace_base} "
                  f"(baseline of start+imports {strace_base} subtracted)")
            if strace_missing is not None:
                print(f"  strace openat, construction with indexes missing (all processes): "
                      f"{strace_missing - strace_base}")
        elif not ns.no_strace:
            print("  (strace not installed: opens of worker processes not counted)")
        speeds = ", ".join(
            f"{k.split('_')[1]} process(es) {v:.2f} s" for k, v in build.items() if k.startswith("jobs_")
        )
        print(f"  index build, {build['files']} realistic TFRecords ({build['megabytes']} MB, 25 KB tiles): {speeds}")
        print(json.dumps({"current": current, "chain": chain, "missing": missing, "build": build,
                          "strace": {"baseline": strace_base, "current": strace_current, "missing": strace_missing}}))
    finally:
        if not ns.dir:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
