"""Benchmark of the preserved-site cross-validation solver against peers' published figures.

Cohorts as peers drew them: each site has 5-59 patients (uniform), a label mix from Dirichlet(2, ..., 2) and each
patient's label from that mix. For every (sites, folds, labels) in {20, 40, 80} x {3, 5, 10} x {2, 3, 4}, a few
cohorts are solved with the default settings (deterministic work budget, 10 s wall-clock safety net) and the
median objective, bound, gap and time are printed, beside the figures peers measured on one cohort each:
Slideflow's CPLEX with a 10 s limit, a plain MILP in HiGHS after 120 s, OR-tools CP-SAT in 10 s.

Usage: python benchmarks/bench_preserved_site.py [--quick] [--seeds N]  (raw results: benchmarks/out/)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from common import save_results  # also puts lib/ on sys.path
from tabulate import tabulate

from slidetiles.splits.preserved_site import random_site_cohort, solve_preserved_site

# Peers' figures: (sites, folds, labels) -> (bound on their cohort, CPLEX 10 s, CP-SAT 10 s, HiGHS 120 s).
PEERS = {
    (20, 3, 2): (6, 6, 6, None),
    (40, 5, 3): (50, 400, 50, 1050),
    (80, 5, 3): (80, 130, 180, None),
    (80, 10, 4): (480, 11280, 203480, None),
}

ALL_CONFIGS = [(sites, k, labels) for sites in (20, 40, 80) for k in (3, 5, 10) for labels in (2, 3, 4)]


def fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.2f}"
    return f"{value:,}"


def run(configs, seeds: int, time_limit: float) -> list[dict]:
    results = []
    for sites, k, labels in configs:
        for seed in range(seeds):
            counts = random_site_cohort(sites, labels, seed)
            sol = solve_preserved_site(counts, k, seed=0, time_limit=time_limit)
            results.append(
                {
                    "sites": sites,
                    "folds": k,
                    "labels": labels,
                    "cohort_seed": seed,
                    "objective": sol.objective,
                    "bound": sol.bound,
                    "gap": sol.gap,
                    "proved_optimal": sol.proved_optimal,
                    "seconds": sol.seconds,
                    "stopped_by_time": sol.stopped_by_time,
                    "method": sol.method,
                    "work": sol.work,
                }
            )
            note = " (stopped by time)" if sol.stopped_by_time else ""
            print(
                f"  {sites:3d} sites {k:2d} folds {labels} labels cohort {seed}: objective {sol.objective:,} "
                f"bound {sol.bound:,} gap {sol.gap:,} {sol.seconds:.2f} s{note}",
                file=sys.stderr,
                flush=True,
            )
    return results


def table(results: list[dict]) -> str:
    rows = []
    configs = sorted({(r["sites"], r["folds"], r["labels"]) for r in results})
    for config in configs:
        runs = [r for r in results if (r["sites"], r["folds"], r["labels"]) == config]
        peer = PEERS.get(config, (None, None, None, None))
        rows.append(
            [
                "{} / {} / {}".format(*config),
                fmt(int(statistics.median(r["objective"] for r in runs))),
                fmt(int(statistics.median(r["bound"] for r in runs))),
                fmt(int(statistics.median(r["gap"] for r in runs))),
                f"{sum(r['gap'] == 0 for r in runs)}/{len(runs)}",
                fmt(statistics.median(r["seconds"] for r in runs)),
                fmt(max(r["seconds"] for r in runs)),
                fmt(peer[0]),
                fmt(peer[1]),
                fmt(peer[2]),
                fmt(peer[3]),
            ]
        )
    headers = [
        "sites / folds / labels",
        "objective (median)",
        "bound (median)",
        "gap (median)",
        "at bound",
        "s (median)",
        "s (max)",
        "peers' bound",
        "CPLEX 10 s",
        "CP-SAT 10 s",
        "HiGHS 120 s",
    ]
    return tabulate(rows, headers=headers, tablefmt="github", stralign="right", disable_numparse=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="only the four configurations peers measured")
    parser.add_argument("--seeds", type=int, default=3, help="cohorts per configuration (default 3)")
    parser.add_argument("--time-limit", type=float, default=10.0, help="wall-clock safety net per solve (s)")
    args = parser.parse_args(argv)
    configs = list(PEERS) if args.quick else ALL_CONFIGS
    started = time.perf_counter()
    results = run(configs, args.seeds, args.time_limit)
    print(
        f"Preserved-site CV: median over {args.seeds} cohorts per row, default budget, "
        f"{os.cpu_count()} CPUs; peers' columns are one cohort each (theirs, not these)."
    )
    print(table(results))
    stopped = sum(r["stopped_by_time"] for r in results)
    print(f"total {time.perf_counter() - started:.1f} s; {stopped} of {len(results)} solves stopped by the time limit")
    print(f"raw results: {save_results('preserved_site', {'results': results})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
