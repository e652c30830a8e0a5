"""Rule extract (logic: slidetiles.pipeline.steps.extract_slide).

Called by the rule's shell command with the job as one JSON argument
(:func:`slidetiles.pipeline.discovery.extract_job_argument`): the slide, where its TFRecord, index, report and
thumbnail go, and the run's tile size and extraction options.
"""

import argparse
import json

from slidetiles.pipeline.steps import extract_slide, run_step

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--job", required=True, help="the job as JSON")
parser.add_argument("--threads", type=int, default=1)
parser.add_argument("--log", help="the rule's log file")
args = parser.parse_args()
spec = json.loads(args.job)
job = spec["job"]
run_step(
    extract_slide,
    log_path=args.log,
    rule="extract",
    slide_path=job["path"],
    report=job["report"],
    thumbnail=job["thumbnail"],
    job=job,
    tile_px=spec["tile_px"],
    tile_um=spec["tile_um"],
    extraction=spec["extraction"],
    on_bad_input=spec["on_bad_input"],
    threads=args.threads,
)
