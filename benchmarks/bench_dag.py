"""`snakemake -n` over many slides: DAG time and job / submission counts, grouped vs ungrouped.

Two cohorts of N slides, as a user's config describes them: a `slides` source of N empty `.svs` files (one
`extract` job per slide; no slide is opened when planning) and a `tiles` source of N empty slide folders (a
`tfrecord` and a `tfrecord_index` job per slide). Times dry runs of the workflow: locally, and with the SLURM
executor and the repository's SLURM profile's groups, one submission per slide and grouped (`--group-components
<group>=K`), counting the cluster submissions each would make. Medians of --runs runs.

Usage: python benchmarks/bench_dag.py [--slides 10000] [--group 50] [--runs 3] [--kind slides tiles]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import save_results, table

REPO = Path(__file__).resolve().parents[1]


#: Per kind: the per-slide rules and the cluster group the SLURM profile puts them in.
PER_SLIDE = {"slides": (("extract",), "extract_slides"), "tiles": (("tfrecord", "tfrecord_index"), "per_slide")}


def make_cohort(root: Path, n_slides: int, kind: str) -> Path:
    folder = root / kind
    folder.mkdir()
    for i in range(n_slides):
        if kind == "tiles":
            (folder / f"slide_{i:05d}").mkdir()
        else:
            (folder / f"slide_{i:05d}.svs").touch()
    (root / "annotations.csv").write_text("patient,slide,label\n")
    config = root / "config.yaml"
    config.write_text(
        "tile_px: 299\ntile_um: 302\n"
        f"sources: {{lab: {{{kind}: {kind}, tfrecords: tfrecords}}}}\n"
        "annotations: annotations.csv\n"
        "datasets: {all: {}}\n"
        "splits: {cv: {dataset: all, strategy: k-fold, k: 3}}\n"
    )
    return config


def dry_run(root: Path, config: Path, extra: list[str]) -> tuple[float, dict[str, int], int]:
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--configfile",
               str(config), "-n", "--cores", "2", *extra]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=root, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode:
        raise SystemExit(f"dry run failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    out = result.stdout + result.stderr
    counts = {}
    for line in out.splitlines():
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if match and match.group(1) in ("extract", "tfrecord", "tfrecord_index", "manifest", "split", "report", "total"):
            counts[match.group(1)] = int(match.group(2))
    groups = len(re.findall(r"Group job (per_slide|extract_slides)", out))
    return seconds, counts, groups


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slides", type=int, default=10_000)
    parser.add_argument("--group", type=int, default=50, help="slides per cluster job when grouped")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--kind", nargs="+", choices=sorted(PER_SLIDE), default=["slides", "tiles"])
    ns = parser.parse_args()
    slurm = ["--executor", "slurm", "--jobs", "100", "--slurm-no-account", "--profile",
             str(REPO / "workflow" / "profiles" / "slurm"), "--workflow-profile", "none"]
    rows, results = [], {}
    for kind in ns.kind:
        rules, group = PER_SLIDE[kind]
        scenarios = {
            "local (snakemake -n)": [],
            "SLURM, one submission per slide": slurm + ["--group-components", f"{group}=1"],
            f"SLURM, grouped ({ns.group} slides per submission)": slurm + ["--group-components", f"{group}={ns.group}"],
        }
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder)
            started = time.perf_counter()
            config = make_cohort(root, ns.slides, kind)
            print(f"{ns.slides} empty {kind} made in {time.perf_counter() - started:.1f} s", file=sys.stderr)
            for name, extra in scenarios.items():
                times = []
                for _ in range(ns.runs):
                    seconds, counts, groups = dry_run(root, config, extra)
                    times.append(seconds)
                    print(f"  {kind}, {name}: {seconds:.1f} s", file=sys.stderr)
                per_slide_jobs = sum(counts.get(rule, 0) for rule in rules)
                # Without a group every per-slide job is its own submission; local runs submit nothing.
                submissions = "-" if not extra else (groups or per_slide_jobs)
                rows.append([kind, name, statistics.median(times), min(times), max(times), counts.get("total"),
                             per_slide_jobs, submissions])
                results[f"{kind}: {name}"] = {"seconds": times, "jobs": counts, "group_jobs": groups}
    print(table(rows, ["input", "dry run", "median s", "min s", "max s", "jobs", "per-slide jobs",
                       "per-slide submissions"]))
    print(f"\nsaved {save_results('bench_dag', {'slides': ns.slides, 'group': ns.group, 'results': results})}")


if __name__ == "__main__":
    main()
