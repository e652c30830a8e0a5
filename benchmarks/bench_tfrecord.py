"""TFRecord hot paths against their peers, measured in one run and printed as ratios.

- index build (CRC checked) vs a plain sequential read of the same bytes, and vs the `tfrecord` package's
  create_index (no CRC, no locations); through the C extension (the default where it is built) and through the
  pure-Python fallback;
- records read and parsed to dicts (CRC checked) vs the `tfrecord` package's reader (no CRC) and tf.data's
  TFRecordDataset + batched parse_example (CRC checked, 2 cores);
- peak memory of reading a file 10x larger.

Usage: python benchmarks/bench_tfrecord.py [--files 20] [--tiles 1000] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

from common import corpus, interleaved_medians, save_results, table, total_bytes

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The `tfrecord` package and TensorFlow both register `tensorflow.Example` in protobuf's default pool, so they
# cannot be imported into one process ("duplicate symbol"); tf.data is therefore timed in a child process right
# after the others. (slidetiles keeps its Example in a private pool and collides with neither.)


def plain_readinto(paths):
    buffer = bytearray(1 << 20)
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buffer):
                pass


def plain_read_whole(paths):
    for path in paths:
        with open(path, "rb") as f:
            f.read()


def ours_build_index(paths):
    from slidetiles.io.tfrecord2idx import build_index

    for path in paths:
        build_index(path)


def ours_build_index_pure(paths):
    """The pure-Python fallback (what SLIDETILES_PURE_PYTHON=1 or a missing C compiler gives)."""
    from slidetiles.io.tfrecord2idx import build_index

    previous = os.environ.get("SLIDETILES_PURE_PYTHON")
    os.environ["SLIDETILES_PURE_PYTHON"] = "1"
    try:
        for path in paths:
            build_index(path)
    finally:
        if previous is None:
            del os.environ["SLIDETILES_PURE_PYTHON"]
        else:
            os.environ["SLIDETILES_PURE_PYTHON"] = previous


def ours_build_index_threaded(paths):
    from slidetiles.io.fastscan import build_index_fast

    for path in paths:
        build_index_fast(path, threaded=True)


def _build_one(path):
    from slidetiles.io.tfrecord2idx import build_index

    return len(build_index(path))


def ours_build_index_parallel(paths, pool):
    list(pool.map(_build_one, paths))


def ours_create_index(paths):
    from slidetiles.io.tfrecord2idx import create_index

    for path in paths:
        create_index(path)


def tfrecord_pkg_create_index(paths, folder):
    from tfrecord.tools.tfrecord2idx import create_index

    for i, path in enumerate(paths):
        create_index(path, os.path.join(folder, f"{i}.index"))


def ours_read(paths, verify=True):
    from slidetiles.io.reader import iter_records

    n = 0
    for path in paths:
        for _ in iter_records(path, verify=verify):
            n += 1
    return n


def ours_loader(paths):
    from slidetiles.tfrecord import tfrecord_loader

    n = 0
    for path in paths:
        for _ in tfrecord_loader(path):
            n += 1
    return n


def tfrecord_pkg_read(paths):
    from tfrecord.reader import tfrecord_loader

    n = 0
    description = {"image_raw": "byte", "slide": "byte", "loc_x": "int", "loc_y": "int"}
    for path in paths:
        for _ in tfrecord_loader(path, None, description):
            n += 1
    return n


def make_tf_data_reader(paths):
    import tensorflow as tf

    spec = {
        "image_raw": tf.io.FixedLenFeature([], tf.string),
        "slide": tf.io.FixedLenFeature([], tf.string),
        "loc_x": tf.io.FixedLenFeature([], tf.int64),
        "loc_y": tf.io.FixedLenFeature([], tf.int64),
    }
    dataset = (
        tf.data.TFRecordDataset(paths, num_parallel_reads=2)
        .batch(256)
        .map(lambda batch: tf.io.parse_example(batch, spec), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )

    def run():
        n = 0
        for batch in dataset:
            n += int(batch["loc_x"].shape[0])
        return n

    return run


_MEMORY_CHILD = """
import sys
sys.path.insert(0, {lib!r})
from slidetiles.io.reader import iter_records
from slidetiles.tfrecord import tfrecord_loader


def peak_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


# A child made by fork + exec starts with its parent's peak RSS: reset the peak (Linux clear_refs "5") so what
# follows measures this process alone.
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = peak_kib()
n = 0
reader = iter_records(sys.argv[1]) if sys.argv[2] == "scan" else tfrecord_loader(sys.argv[1])
for record in reader:
    n += 1
print(n, before, peak_kib())
"""


def peak_memory(paths, factor: int = 10) -> list[list]:
    """Peak RSS (KiB) reading one file, and one made of ``factor`` copies of it, in fresh processes."""
    lib = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib")
    rows = []
    with tempfile.TemporaryDirectory(dir=os.path.dirname(paths[0])) as folder:
        big = os.path.join(folder, "big.tfrecords")
        with open(big, "wb") as out:
            for path in paths[:factor]:
                with open(path, "rb") as f:
                    out.write(f.read())
        for mode in ("scan", "loader"):
            for label, path in ((f"1 file ({os.path.getsize(paths[0]) >> 20} MiB)", paths[0]), (f"{factor} files concatenated ({os.path.getsize(big) >> 20} MiB)", big)):
                out = subprocess.run(
                    [sys.executable, "-c", _MEMORY_CHILD.format(lib=lib), path, mode],
                    capture_output=True, text=True, check=True,
                ).stdout.split()
                records, before, after = (int(v) for v in out)
                rows.append([mode, label, records, before / 1024, after / 1024, (after - before) / 1024])
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--tiles", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tf-data-only", action="store_true", help=argparse.SUPPRESS)
    ns = parser.parse_args()

    paths = corpus(ns.files, ns.tiles)
    if ns.tf_data_only:
        from common import median_time

        print(median_time(make_tf_data_reader(paths), runs=ns.runs))
        return
    size = total_bytes(paths)
    n_records = ns.files * ns.tiles
    print(f"corpus: {ns.files} files x {ns.tiles} JPEG tiles (299 px), {size / 1e6:,.0f} MB, "
          f"{size / n_records / 1e3:.1f} KB per record; medians of {ns.runs} interleaved runs\n")

    from concurrent.futures import ProcessPoolExecutor

    from slidetiles.io import fastscan

    fast = fastscan.available()
    kind = f"C, CRC {fastscan._fastscan.crc_implementation}" if fast else "pure Python: no C extension or no hardware CRC"
    index_functions = {
        "plain read (readinto 1 MiB buffer)": lambda: plain_readinto(paths),
        "plain read (f.read() whole file)": lambda: plain_read_whole(paths),
        f"slidetiles build_index (CRC checked, locations; {kind})": lambda: ours_build_index(paths),
    }
    if fast:
        index_functions["slidetiles build_index, pure-Python fallback (SLIDETILES_PURE_PYTHON=1)"] = (
            lambda: ours_build_index_pure(paths)
        )
        index_functions["slidetiles build_index_fast(threaded=True) (reader thread, not the default)"] = (
            lambda: ours_build_index_threaded(paths)
        )
    with tempfile.TemporaryDirectory() as scratch, ProcessPoolExecutor(2) as pool:
        index_times = interleaved_medians(
            {
                **index_functions,
                "slidetiles create_index (same + write .npz)": lambda: ours_create_index(paths),
                "slidetiles build_index, 2 processes (as `slidetiles index -j 2`)": lambda: ours_build_index_parallel(
                    paths, pool
                ),
                "tfrecord pkg create_index (no CRC, no locations)": lambda: tfrecord_pkg_create_index(paths, scratch),
            },
            runs=ns.runs,
        )
    base = index_times["plain read (readinto 1 MiB buffer)"]
    base_whole = index_times["plain read (f.read() whole file)"]
    rows = [
        [name, size / t / 1e6, n_records / t, base / t, base_whole / t] for name, t in index_times.items()
    ]
    print("Index build")
    print(table(rows, ["what", "MB/s", "records/s", "vs readinto", "vs f.read()"]))

    read_times = interleaved_medians(
        {
            "slidetiles iter_records (CRC checked)": lambda: ours_read(paths),
            "slidetiles iter_records (verify=False)": lambda: ours_read(paths, verify=False),
            "slidetiles tfrecord_loader (index, CRC checked)": lambda: ours_loader(paths),
            "tfrecord pkg tfrecord_loader (no CRC)": lambda: tfrecord_pkg_read(paths),
        },
        runs=ns.runs,
    )
    child = subprocess.run(
        [sys.executable, __file__, "--tf-data-only", "--files", str(ns.files), "--tiles", str(ns.tiles),
         "--runs", str(ns.runs)],
        capture_output=True, text=True, check=True,
    )
    read_times["tf.data TFRecordDataset + parse_example (CRC, 2 cores)"] = float(child.stdout.split()[-1])
    peer = read_times["tfrecord pkg tfrecord_loader (no CRC)"]
    peer_tf = read_times["tf.data TFRecordDataset + parse_example (CRC, 2 cores)"]
    rows = [[name, n_records / t, size / t / 1e6, peer / t, peer_tf / t] for name, t in read_times.items()]
    print("\nRecords read and parsed to dicts")
    print(table(rows, ["what", "records/s", "MB/s", "vs tfrecord pkg", "vs tf.data"]))

    memory = peak_memory(paths)
    print("\nPeak memory (fresh process; peak RSS in MiB after imports, and after reading every record)")
    print(table(memory, ["reader", "file", "records", "RSS before", "RSS after", "growth"]))

    results = {
        "corpus": {"files": ns.files, "tiles": ns.tiles, "bytes": size},
        "index_seconds": index_times,
        "read_seconds": read_times,
        "memory_mib": memory,
    }
    print(f"\nsaved {save_results('bench_tfrecord', results)}")


if __name__ == "__main__":
    main()
