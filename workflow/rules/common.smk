import os
import re
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

# The library lives in lib/: importable here and in every job (they inherit PYTHONPATH, locally and on SLURM)
# whether or not it is pip-installed in the environment, e.g. a --use-conda rule environment.
LIB = os.path.join(workflow.basedir, "lib")
sys.path.insert(0, LIB)
# Set, not required from the user, so there is nothing for an envvars: directive to assert.
# Shell commands call `python`: this Snakemake's own interpreter, unless a rule's conda environment
# (--use-conda), activated in front of it, provides one.
os.environ.update(
    PYTHONPATH=os.pathsep.join(filter(None, [LIB, os.environ.get("PYTHONPATH")])),
    PATH=os.pathsep.join(
        filter(None, [os.path.dirname(sys.executable), os.environ.get("PATH")])
    ),
)

from slidetiles.pipeline.discovery import (
    ConfigError,
    canonical,
    check_config,
    extract_job_argument,
    lost_extractions,
    plan_extractions,
    plan_slides,
)

min_version("9.0")


validate(config, schema="../schemas/config.schema.yaml", set_default=True)

try:
    check_config(config)
    SLIDE_JOBS = plan_slides(config)
    # Sources with `slides` (and no `tiles`): one scandir of each slides folder; no slide is opened here.
    EXTRACT_JOBS = plan_extractions(config, SLIDE_JOBS)
except ConfigError as error:
    raise WorkflowError(f"config: {error}")

JOBS_BY_TFRECORD = {job.tfrecord: job for job in SLIDE_JOBS}
EXTRACT_BY_SLIDE = {(job.source, job.slide): job for job in EXTRACT_JOBS}
EXTRACT_SETTINGS = {
    "tile_px": config["tile_px"],
    "tile_um": config["tile_um"],
    "extraction": canonical(config["extraction"]),
    "on_bad_input": config["on_bad_input"],
}
SLIDE_SOURCE_PATTERN = (
    "|".join(re.escape(s) for s in sorted({job.source for job in EXTRACT_JOBS}))
    or "(?!)"
)
DEMO = canonical(config["demo"])
SOURCES = canonical(config["sources"])
DEMO_SLIDES = os.path.join(DEMO["out_dir"], "slides")
# TFRecord folders the workflow writes into; the per-slide rules only match paths inside them.
TFRECORD_DIRS = sorted({os.path.dirname(job.tfrecord) for job in SLIDE_JOBS})
TFRECORD_DIR_PATTERN = "|".join(re.escape(d) for d in TFRECORD_DIRS) or "(?!)"


wildcard_constraints:
    tfrecord_dir=TFRECORD_DIR_PATTERN,
    slide=r"[^/]+",
    dataset=r"[^/]+",
    plan=r"[^/]+",


def slide_job(wildcards):
    return JOBS_BY_TFRECORD[
        os.path.join(wildcards.tfrecord_dir, f"{wildcards.slide}.tfrecords")
    ]


def slide_tiles_dir(wildcards):
    return slide_job(wildcards).tiles_dir


def extract_job(wildcards):
    return EXTRACT_BY_SLIDE[(wildcards.source, wildcards.slide)]


def extract_inputs(wildcards):
    """The slide file, and its ROI file when there is one (an edited ROI re-extracts the slide)."""
    job = extract_job(wildcards)
    return [job.path, job.roi] if job.roi else [job.path]


def extract_job_json(wildcards):
    """Everything the extract job needs, as one JSON argument (a change re-runs the slide: params are tracked)."""
    return extract_job_argument(extract_job(wildcards), EXTRACT_SETTINGS)


def dataset_extraction_reports(wildcards):
    """Extraction reports of the dataset's slide sources: written after each slide's TFRecord and index."""
    sources = dataset_sources(wildcards.dataset)
    jobs = [job for job in EXTRACT_JOBS if job.source in sources]
    lost = lost_extractions(jobs)
    if lost:
        raise WorkflowError("; ".join(lost))
    return [job.report for job in jobs]


def dataset_sources(dataset):
    return config["datasets"][dataset].get("sources") or sorted(config["sources"])


def dataset_tfrecords(wildcards):
    sources = dataset_sources(wildcards.dataset)
    return [job.tfrecord for job in SLIDE_JOBS if job.source in sources]


def dataset_indexes(wildcards):
    sources = dataset_sources(wildcards.dataset)
    return [job.index for job in SLIDE_JOBS if job.source in sources]


def dataset_params(wildcards):
    return canonical(config["datasets"][wildcards.dataset])


def split_manifest(wildcards):
    return f"results/manifests/{config['splits'][wildcards.plan]['dataset']}.json"


def all_targets():
    # Every slide's extraction report and thumbnail are the report's inputs: not listed again here, which would
    # double Snakemake's per-file work at 10,000 slides.
    targets = expand(
        "results/manifests/{dataset}.json", dataset=sorted(config["datasets"])
    )
    targets += expand("results/splits/{plan}.json", plan=sorted(config["splits"]))
    targets.append("results/report.html")
    return targets
