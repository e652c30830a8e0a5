"""The demo end to end: wall time per stage, from the `benchmark:` files a pipeline run leaves.

Usage: rm -rf results resources/demo && make run && python benchmarks/demo_stage_times.py
"""

from __future__ import annotations

import sys

from common import table

from slidetiles.pipeline.report import stage_timings

if __name__ == "__main__":
    frame = stage_timings(sys.argv[1] if len(sys.argv) > 1 else "results/benchmarks")
    rows = [[stage, *values] for stage, values in zip(frame.index, frame.to_numpy().tolist())]
    print(table(rows, ["stage", "jobs", "total s", "slowest job s"]))
