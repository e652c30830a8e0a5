"""Training loaders: tiles per second to uint8 tensors, against the decode-only ceiling and two peers.

Measured on the same tiles, on this machine's cores, one full finite epoch per run (after a warm-up epoch that
starts persistent workers / builds pipelines), medians of interleaved runs:

- (a) ceiling: simplejpeg decode of the same JPEG bytes held in memory, one core (x workers for the ratio), and
  the same in two processes side by side (what two cores of this machine reach together: less than twice one
  core, as they share caches, memory bandwidth and a host);
- ours: ``make_torch_loader`` (CRC-checked reads, shuffled interleaving, batches of 64 decoded in the workers),
  with 0, 1 and 2 workers; and ``make_tf_dataset`` in process (tf.data parallel decode) and with 1 and 2
  worker processes (the same reads, simplejpeg decoding into shared memory, batches handed to tf.data);
- (b) tf.data: ``TFRecordDataset`` + ``parse_single_example`` + ``decode_jpeg``, AUTOTUNE everywhere (the ratio
  column's reference), and the same with ``dct_method='INTEGER_ACCURATE'``, which gives our loaders' pixels;
- (c) the ``tfrecord`` package's ``MultiTFRecordDataset`` + simplejpeg in a ``DataLoader`` with the same workers;
- peak memory (RSS) of a fresh process reading a short epoch and one 5x longer.

The corpus is ``common.corpus(20, 1000)`` (realistic 299-px JPEG tiles); by default each file is cut to its first
250 records (byte-identical prefixes, 5,000 tiles per epoch) so a run takes minutes on 2 cores; ``--tiles 1000``
reads the full files.

The ``tfrecord`` package and TensorFlow both register ``tensorflow.Example`` in protobuf's default pool and
cannot share a process, so the TensorFlow measurements run in a child process: tf.data and our TensorFlow
loaders there are interleaved epoch by epoch in one process, and a second table gives their ratios to tf.data
from that run (also per round, paired).

Usage: python benchmarks/bench_loaders.py [--files 20] [--tiles 250] [--runs 5] [--batch 64]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import OUT, corpus, save_results, table

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
LIB = str(Path(__file__).resolve().parent.parent / "lib")


def prefix_corpus(paths: list[str], n: int) -> list[str]:
    """Copies of ``paths`` holding only their first ``n`` records (same bytes), with our indexes."""
    from slidetiles.io import tfrecord2idx

    folder = OUT / f"{Path(paths[0]).parent.name}_first{n}"
    out = [str(folder / Path(p).name) for p in paths]
    folder.mkdir(parents=True, exist_ok=True)
    for src, dst in zip(paths, out):
        if os.path.exists(tfrecord2idx.index_path(dst)):
            continue  # written (index last) by an earlier run
        arr_0 = tfrecord2idx.read_index(src).arr_0
        end = int(arr_0[n - 1].sum()) if n < len(arr_0) else os.path.getsize(src)
        with open(src, "rb") as f:
            data = f.read(end)
        with open(dst, "wb") as f:
            f.write(data)
        tfrecord2idx.create_index(dst)
    return out


def sources_for(paths):
    from slidetiles.loaders import TileSource

    return TileSource.from_paths(paths)


def load_images(paths) -> list[bytes]:
    from slidetiles.io.reader import iter_records

    return [r["image_raw"] for p in paths for r in iter_records(p)]


def decode_only(images) -> int:
    import simplejpeg

    for data in images:
        simplejpeg.decode_jpeg(data, colorspace="RGB")
    return len(images)


def _decode_child(images, queue) -> None:
    start = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes
    decode_only(images)
    queue.put((start, time.perf_counter(), time.process_time()))


def decode_parallel(images, processes: int = 2) -> tuple[float, float]:
    """Decode-only of the same bytes in ``processes`` forked processes at once: (seconds from the first start to
    the last end, CPU seconds per process). What this machine's cores reach together with nothing else to do: its
    parallel ceiling, below ``processes x`` the one-core rate where cores share caches, memory bandwidth or a host.
    """
    import multiprocessing

    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [context.Process(target=_decode_child, args=(images, queue)) for _ in range(processes)]
    for child in children:
        child.start()
    results = [queue.get() for _ in children]
    for child in children:
        child.join()
    return max(r[1] for r in results) - min(r[0] for r in results), sum(r[2] for r in results) / processes


def epoch(loader) -> int:
    n = 0
    for batch in loader:
        n += len(batch[0] if isinstance(batch, (tuple, list)) else batch)
    return n


def ours_torch(paths, workers, batch):
    from slidetiles.loaders import make_torch_loader

    return make_torch_loader(sources_for(paths), batch_size=batch, num_workers=workers, infinite=False, seed=0)


def _tfrecord_pkg_decode(record):
    import simplejpeg
    import torch

    return torch.from_numpy(simplejpeg.decode_jpeg(bytes(record["image_raw"]), colorspace="RGB")).permute(2, 0, 1)


def tfrecord_pkg_torch(paths, workers, batch, scratch):
    import torch
    from tfrecord.tools.tfrecord2idx import create_index
    from tfrecord.torch.dataset import MultiTFRecordDataset

    folder = os.path.dirname(paths[0])
    names = [Path(p).stem for p in paths]
    for name in names:
        index = os.path.join(scratch, f"{name}.index")
        if not os.path.exists(index):
            create_index(os.path.join(folder, f"{name}.tfrecords"), index)
    dataset = MultiTFRecordDataset(
        os.path.join(folder, "{}.tfrecords"),
        os.path.join(scratch, "{}.index"),
        {name: 1.0 for name in names},
        {"image_raw": "byte", "slide": "byte", "loc_x": "int", "loc_y": "int"},
        transform=_tfrecord_pkg_decode,
        infinite=False,
    )
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch, num_workers=workers, persistent_workers=workers > 0
    )


def measure(images, loaders, runs) -> tuple[dict, dict]:
    """Median wall time per epoch of each contender, interleaved round-robin so drifting load hits all alike;
    and median CPU seconds per epoch of the processes that decode (this one for decode-only and 0 workers, the
    worker processes otherwise), which other jobs on the machine do not inflate the way they inflate wall time.
    """
    import statistics

    import psutil

    def workers_of(loader):
        iterator = getattr(loader, "_iterator", None)
        return [psutil.Process(w.pid) for w in getattr(iterator, "_workers", [])]

    def cpu_of(processes):
        if not processes:
            return time.process_time()
        return sum(sum(p.cpu_times()[:2]) for p in processes)

    runs_wall: dict[str, list] = {}
    runs_cpu: dict[str, list] = {}
    contenders = {"decode-only, in memory, 1 core": (lambda: decode_only(images), [])}
    contenders.update({name: ((lambda loader=loader: epoch(loader)), workers_of(loader)) for name, loader in loaders.items()})
    for _ in range(runs):
        wall, cpu = decode_parallel(images, 2)
        runs_wall.setdefault(PARALLEL, []).append(wall / 2)  # seconds per len(images) tiles, as for the others
        runs_cpu.setdefault(PARALLEL, []).append(cpu)
        for name, (function, processes) in contenders.items():
            cpu0, t0 = cpu_of(processes), time.perf_counter()
            function()
            runs_wall.setdefault(name, []).append(time.perf_counter() - t0)
            runs_cpu.setdefault(name, []).append(cpu_of(processes) - cpu0)
    return (
        {k: statistics.median(v) for k, v in runs_wall.items()},
        {k: statistics.median(v) for k, v in runs_cpu.items()},
    )


PARALLEL = "decode-only, in memory, 2 processes at once"
TF_DATA = "tf.data TFRecordDataset + decode_jpeg (AUTOTUNE)"
TF_DATA_ACCURATE = "tf.data, same + dct_method=INTEGER_ACCURATE"
TF_OURS_0 = "ours for TF, make_tf_dataset, in process (tf.data map)"
TF_OURS_1 = "ours for TF, make_tf_dataset, 1 worker"
TF_OURS_2 = "ours for TF, make_tf_dataset, 2 workers"
TF_OURS_2_ANY = "ours for TF, 2 workers, deterministic=False"
#: Processes (or cores) each contender decodes on, for the 'vs ceiling' columns; tf.data uses both cores.
CORES = {"ours 0 workers": 1, "ours 1 worker": 1, "ours 2 workers": 2, "tfrecord pkg 1 worker": 1,
         "tfrecord pkg 2 workers": 2, PARALLEL: 2, TF_DATA: 2, TF_DATA_ACCURATE: 2, TF_OURS_0: 2, TF_OURS_1: 1,
         TF_OURS_2: 2, TF_OURS_2_ANY: 2}


# -- TensorFlow, in a child process -------------------------------------------------------------------------------


def tf_child(paths, batch, runs) -> dict:
    import psutil
    import tensorflow as tf

    from slidetiles.loaders import make_tf_dataset

    spec = {
        "image_raw": tf.io.FixedLenFeature([], tf.string),
        "slide": tf.io.FixedLenFeature([], tf.string),
        "loc_x": tf.io.FixedLenFeature([], tf.int64),
        "loc_y": tf.io.FixedLenFeature([], tf.int64),
    }

    def parse_decode(dct_method):
        def parse(record):
            features = tf.io.parse_single_example(record, spec)
            return tf.io.decode_jpeg(features["image_raw"], channels=3, dct_method=dct_method), features["loc_x"]

        return parse

    def tuned(dct_method=""):
        return (
            tf.data.Dataset.from_tensor_slices(paths)
            .shuffle(len(paths))
            .interleave(tf.data.TFRecordDataset, cycle_length=len(paths), num_parallel_calls=tf.data.AUTOTUNE)
            .map(parse_decode(dct_method), num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch)
            .prefetch(tf.data.AUTOTUNE)
        )

    sources = sources_for(paths)
    contenders = {
        # decode_jpeg's default IDCT is libjpeg's fast one (pixels differ from Pillow/simplejpeg by a few levels)
        TF_DATA: tuned(),
        # the accurate IDCT: the pixels our loaders give (and Pillow, simplejpeg)
        TF_DATA_ACCURATE: tuned("INTEGER_ACCURATE"),
        TF_OURS_0: make_tf_dataset(sources, batch_size=batch, infinite=False, seed=0),
        TF_OURS_1: make_tf_dataset(sources, batch_size=batch, infinite=False, seed=0, num_workers=1),
        TF_OURS_2: make_tf_dataset(sources, batch_size=batch, infinite=False, seed=0, num_workers=2),
        TF_OURS_2_ANY: make_tf_dataset(sources, batch_size=batch, infinite=False, seed=0, num_workers=2,
                                       deterministic=False),
    }
    counts = {name: sum(int(b[0].shape[0]) for b in dataset) for name, dataset in contenders.items()}  # warm-up
    assert len(set(counts.values())) == 1, counts
    me = psutil.Process()

    def cpu_seconds() -> float:
        """CPU time of this process (tf.data's threads) and its children (our loader's worker processes)."""
        total = sum(me.cpu_times()[:2])
        for child in me.children(recursive=True):
            try:
                total += sum(child.cpu_times()[:2])
            except psutil.NoSuchProcess:
                pass
        return total

    seconds: dict[str, list] = {}
    cpu: dict[str, list] = {}
    for _ in range(runs):  # interleaved, as in the parent: drifting load hits every contender alike
        for name, dataset in contenders.items():
            cpu0, started = cpu_seconds(), time.perf_counter()
            for _batch in dataset:
                pass
            seconds.setdefault(name, []).append(time.perf_counter() - started)
            cpu.setdefault(name, []).append(cpu_seconds() - cpu0)
    return {"tiles": counts[TF_DATA], "seconds": seconds, "cpu": cpu}


# -- peak memory, in fresh processes --------------------------------------------------------------------------------

_MEMORY_CHILD = """
import json, resource, sys
sys.path.insert(0, {lib!r})
from slidetiles.loaders import TileSource, make_torch_loader
paths = json.loads(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
loader = make_torch_loader(TileSource.from_paths(paths), batch_size={batch}, num_workers=2, infinite=False, seed=0,
                           persistent_workers=False)
n = sum(len(b[0]) for b in loader)
del loader
main = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps([n, before, main, workers]))
"""


def peak_memory(short_paths, long_paths, batch) -> list[list]:
    rows = []
    for label, paths in (("short epoch", short_paths), ("5x longer epoch", long_paths)):
        out = subprocess.run(
            [sys.executable, "-c", _MEMORY_CHILD.format(lib=LIB, batch=batch), json.dumps(paths)],
            capture_output=True, text=True, check=True,
        ).stdout
        n, before, main, workers = json.loads(out.strip().splitlines()[-1])
        rows.append([label, n, before / 1024, main / 1024, workers / 1024])
    return rows


def run_tf_child(ns) -> dict:
    """The TensorFlow measurements, in a child process (see the module docstring)."""
    child = subprocess.run(
        [sys.executable, __file__, "--tf-child", "--files", str(ns.files), "--tiles", str(ns.tiles),
         "--runs", str(ns.runs), "--batch", str(ns.batch)],
        capture_output=True, text=True,
    )
    if child.returncode:
        print(child.stderr[-3000:], file=sys.stderr)
        raise SystemExit("TensorFlow child failed")
    return json.loads(child.stdout.strip().splitlines()[-1])


def print_tf_table(tf_runs: dict) -> None:
    """Our TensorFlow loaders against tf.data measured in the same process, epoch after epoch: each round's ratio
    pairs epochs run seconds apart, so it is steadier than a ratio of medians when other jobs share the cores."""
    n_tiles = tf_runs["tiles"]
    reference = tf_runs["seconds"][TF_DATA]
    reference_cpu = statistics.median(tf_runs["cpu"][TF_DATA])
    rows = []
    for name, runs in tf_runs["seconds"].items():
        paired = [r / s for r, s in zip(reference, runs)]
        cpu = statistics.median(tf_runs["cpu"][name])
        rows.append([
            name, n_tiles / statistics.median(runs), 1e6 * cpu / n_tiles,
            statistics.median(reference) / statistics.median(runs), statistics.median(paired), min(paired),
            max(paired), min(reference) / min(runs), reference_cpu / cpu,
        ])
    print("TensorFlow, one process, contenders interleaved epoch by epoch")
    print(table(rows, ["what", "tiles/s", "CPU us/tile (incl. workers)", "vs tf.data (medians)",
                       "vs tf.data (median of paired runs)", "min", "max", "vs tf.data (best epochs)",
                       "vs tf.data per CPU second"]))
    print("  CPU us/tile: CPU time of the TF process (all its threads) and its worker processes, per tile;\n"
          "  'best epochs': fastest epoch of tf.data / fastest of this one (other jobs only ever slow an epoch down);\n"
          "  'per CPU second': tf.data's CPU time per tile / this one's, the throughput ratio when both keep the\n"
          "  same cores busy (steadier than wall time when other jobs share the machine).\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--tiles", type=int, default=250, help="records read per file (a prefix of the corpus)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--tf-only", action="store_true", help="only the TensorFlow table (tf.data and ours)")
    parser.add_argument("--tf-child", action="store_true", help=argparse.SUPPRESS)
    ns = parser.parse_args()

    full = corpus(20, 1000)[: ns.files]
    paths = prefix_corpus(full, ns.tiles) if ns.tiles < 1000 else full
    if ns.tf_child:
        print(json.dumps(tf_child(paths, ns.batch, ns.runs)))
        return
    if ns.tf_only:
        print(f"corpus: {ns.files} files x {ns.tiles} records; {os.cpu_count()} CPUs; batches of {ns.batch}; "
              f"medians of {ns.runs} interleaved epochs\n")
        tf_runs = run_tf_child(ns)
        print_tf_table(tf_runs)
        print(f"saved {save_results('bench_loaders_tf', {'tensorflow_runs': tf_runs, 'cpus': os.cpu_count()})}")
        return

    import tempfile

    import torch

    images = load_images(paths)
    n_tiles = len(images)
    size = sum(len(b) for b in images)
    print(f"corpus: {ns.files} files x {ns.tiles} records = {n_tiles} JPEG tiles (299 px, {size / n_tiles / 1e3:.1f} KB "
          f"each); {os.cpu_count()} CPUs; batches of {ns.batch}; medians of {ns.runs} interleaved epochs\n")

    with tempfile.TemporaryDirectory() as scratch:
        loaders = {
            "ours 0 workers": ours_torch(paths, 0, ns.batch),
            "ours 1 worker": ours_torch(paths, 1, ns.batch),
            "ours 2 workers": ours_torch(paths, 2, ns.batch),
            "tfrecord pkg 1 worker": tfrecord_pkg_torch(paths, 1, ns.batch, scratch),
            "tfrecord pkg 2 workers": tfrecord_pkg_torch(paths, 2, ns.batch, scratch),
        }
        counts = {"decode-only, in memory, 1 core": decode_only(images)}
        counts.update({name: epoch(loader) for name, loader in loaders.items()})  # also starts persistent workers
        assert all(c == n_tiles for c in counts.values()), counts
        times, cpu = measure(images, loaders, ns.runs)
        del loaders

    started = time.perf_counter()
    tf_runs = run_tf_child(ns)
    assert tf_runs["tiles"] == n_tiles
    times.update({name: statistics.median(v) for name, v in tf_runs["seconds"].items()})

    ceiling = n_tiles / times["decode-only, in memory, 1 core"]
    parallel_ceiling = n_tiles / times[PARALLEL]
    ceiling_cpu = cpu["decode-only, in memory, 1 core"]
    tf_rate = n_tiles / times[TF_DATA]
    rows = []
    for name, seconds in times.items():
        rate = n_tiles / seconds
        cores = CORES.get(name, 1)
        efficiency = ceiling_cpu / cpu[name] if name in cpu else float("nan")
        same_cores = rate / (ceiling if cores == 1 else parallel_ceiling)
        rows.append([name, rate, rate / (ceiling * cores), same_cores, efficiency, rate / tf_rate])
    print("Tiles per second to uint8 tensors (one finite epoch, CRC-checked for ours and tf.data)")
    print(table(rows, ["what", "tiles/s", "vs ceiling x workers", "vs decode-only on its cores", "CPU efficiency",
                       "vs tf.data"]))
    print("  'vs ceiling x workers': throughput / (one-core decode-only rate x the processes or cores it decodes on);\n"
          "  'vs decode-only on its cores': throughput / decode-only on as many cores at once (1: the one-core\n"
          "  rate; 2: two decode-only processes side by side, what this machine's two cores reach together);\n"
          "  'CPU efficiency': decode-only CPU time / CPU time of the decoding processes (this process with 0\n"
          "  workers, the workers otherwise) for the same tiles: per-worker efficiency, not inflated by other load.\n"
          "  The torch rows and the tf.data row come from different processes run one after the other.\n")

    print_tf_table(tf_runs)

    short = prefix_corpus(full, 100)
    long = prefix_corpus(full, 500)
    memory = peak_memory(short, long, ns.batch)
    print("\nPeak memory, ours with 2 workers, fresh process (MiB of max RSS)")
    print(table(memory, ["epoch", "tiles", "main before", "main peak", "largest worker peak"]))

    results = {
        "corpus": {"files": ns.files, "records_per_file": ns.tiles, "tiles": n_tiles, "bytes": size},
        "seconds": times,
        "decoding_cpu_seconds": cpu,
        "tensorflow_runs": tf_runs,
        "tiles_per_second": {name: n_tiles / t for name, t in times.items()},
        "memory_mib": memory,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    print(f"\nsaved {save_results('bench_loaders', results)} ({time.perf_counter() - started:.0f} s for TF + memory)")


if __name__ == "__main__":
    sys.path.insert(0, LIB)
    main()
