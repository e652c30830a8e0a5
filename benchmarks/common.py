"""Shared pieces of the benchmarks: the realistic TFRecord corpus, timing, and tables.

Timings on this kind of machine are noisy: every figure is a median of several runs, and the peers are measured
in the same process, interleaved with ours, so ratios compare like with like.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"

sys.path.insert(0, str(HERE.parent / "lib"))


def corpus(n_files: int = 20, n_tiles: int = 1000, px: int = 299, seed: int = 0, name: str | None = None) -> list[str]:
    """``n_files`` TFRecords of ``n_tiles`` realistic JPEG tiles each (cached under benchmarks/out/)."""
    from slidetiles.demo import iter_tiles
    from slidetiles.io.writer import TFRecordWriter

    folder = OUT / (name or f"corpus_{n_files}x{n_tiles}_{px}px_seed{seed}")
    paths = [str(folder / f"slide_{i:03d}.tfrecords") for i in range(n_files)]
    marker = folder / "complete.json"
    if marker.exists():
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    tiles = iter_tiles(seed, n_files * n_tiles, px=px)
    started = time.perf_counter()
    for i, path in enumerate(paths):
        with TFRecordWriter(path) as writer:
            for j in range(n_tiles):
                writer.write_tile(next(tiles), f"slide_{i:03d}", (j % 40) * px, (j // 40) * px)
    marker.write_text(json.dumps({"files": n_files, "tiles": n_tiles, "px": px, "seed": seed}))
    print(f"generated {folder} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return paths


def total_bytes(paths) -> int:
    return sum(os.path.getsize(p) for p in paths)


def median_time(function, runs: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``function()`` over ``runs`` runs after ``warmup`` untimed ones."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def interleaved_medians(functions: dict, runs: int = 5, warmup: int = 1) -> dict[str, float]:
    """Median time of each function, running them round-robin so drifting machine load hits all alike."""
    for function in functions.values():
        for _ in range(warmup):
            function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(runs):
        for name, function in functions.items():
            started = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def table(rows: list[list], headers: list[str]) -> str:
    from tabulate import tabulate

    return tabulate(rows, headers=headers, tablefmt="github", floatfmt=",.2f")


def save_results(name: str, results: dict) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(results, indent=2, sort_keys=True))
    return path
