"""Slides of each source, found cheaply when the Snakefile is parsed.

Every cluster job re-parses the Snakefile, so discovery is one ``os.scandir`` per source (never a walk over the
tiles), sorted so the DAG is the same on every machine.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

from slidetiles.dataset.extraction import SLIDE_EXTENSIONS
from slidetiles.demo import demo_slide_files
# ConfigError lives in slidetiles.errors with the others; importing it from here still works.
from slidetiles.errors import ConfigError, SplitError
from slidetiles.io.tiles import TILE_EXTENSIONS, check_name
from slidetiles.tile_size import tile_label

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlideJob:
    """One slide of one source: where its tiles are and where its TFRecord and index go."""

    source: str
    slide: str
    tiles_dir: str
    tfrecord: str
    index: str


def canonical(value):
    """Dicts with sorted keys, recursively.

    Config values passed as ``params:`` go through this: Snakemake re-runs a job whose params changed, and a
    change in the config's key order alone must not count.
    """
    if isinstance(value, dict):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [canonical(item) for item in value]
    return value


def demo_source(config: dict) -> str | None:
    """The source the enabled demo provides (its ``slides`` must be ``<demo.out_dir>/slides``), else None."""
    demo = config.get("demo") or {}
    if not demo.get("enabled"):
        return None
    source = demo.get("source", "demo")
    if source not in config["sources"]:
        raise ConfigError(f"demo.source: {source!r} is not one of sources ({', '.join(config['sources'])})")
    spec = config["sources"][source]
    expected = os.path.normpath(os.path.join(demo.get("out_dir", "resources/demo"), "slides"))
    if spec.get("tiles") or os.path.normpath(spec.get("slides") or "") != expected:
        raise ConfigError(
            f"sources.{source}: the demo writes its slides to {expected!r} (demo.out_dir + '/slides'); set "
            f"sources.{source}.slides: {expected} and no 'tiles', or disable the demo (demo: {{enabled: false}})"
        )
    return source


def _slide_folders(tiles_dir: str, source: str) -> list[str]:
    try:
        with os.scandir(tiles_dir) as entries:
            return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    except FileNotFoundError:
        raise ConfigError(
            f"sources.{source}.tiles: the tiles folder {tiles_dir!r} does not exist (working directory "
            f"{os.getcwd()!r}); fix the path or remove 'tiles' to use existing TFRecords only"
        ) from None
    except NotADirectoryError:
        raise ConfigError(f"sources.{source}.tiles: {tiles_dir!r} is a file, not a folder of slide folders") from None


def _has_tiles(folder: str) -> bool:
    with os.scandir(folder) as entries:
        return any(os.path.splitext(e.name)[1].lower() in TILE_EXTENSIONS for e in entries)


def _usable_name(slide: str, key: str, what: str, skip: bool) -> bool:
    """Whether ``slide`` can name files; if not, a ConfigError under ``key``, or (``skip``) a warning and False."""
    try:
        check_name(slide)
    except ValueError as exc:
        if not skip:
            raise ConfigError(f"{key}: {exc}") from None
        log.warning("skipping %s: %s", what, exc)
        return False
    return True


def _claim(seen: dict[str, str], slide: str, source: str) -> None:
    """Record that ``source`` has ``slide``; a name already claimed by another source is a ConfigError."""
    if slide in seen:
        raise ConfigError(f"slide {slide!r} is in two sources ({seen[slide]} and {source}); slide names must be unique")
    seen[slide] = source


def plan_slides(config: dict) -> list[SlideJob]:
    """Every (source, slide) whose TFRecord the workflow builds, in a stable order.

    Sources without ``tiles`` contribute no jobs (their TFRecords exist already). With ``on_bad_input: skip``,
    slide names that would break paths are skipped with a warning, and so are slide folders without tile
    images (that costs one extra ``scandir`` per slide, so it happens only in skip mode; in error mode the
    slide's job stops with a message naming the folder).
    """
    label = tile_label(config["tile_px"], config["tile_um"])
    skip = config.get("on_bad_input", "error") == "skip"
    jobs: list[SlideJob] = []
    seen: dict[str, str] = {}
    for source in sorted(config["sources"]):
        spec = config["sources"][source]
        tiles_dir = spec.get("tiles")
        if not tiles_dir:
            continue
        tiles_dir = os.path.normpath(tiles_dir)
        out_dir = os.path.join(os.path.normpath(spec["tfrecords"]), label)
        slides = _slide_folders(tiles_dir, source)
        for slide in slides:
            if not _usable_name(slide, f"sources.{source}", f"slide folder {slide!r} of source {source}", skip):
                continue
            slide_dir = os.path.join(tiles_dir, slide)
            if skip and not _has_tiles(slide_dir):
                log.warning("skipping %s: no tile images in the slide folder", slide_dir)
                continue
            _claim(seen, slide, source)
            tfrecord = os.path.join(out_dir, f"{slide}.tfrecords")
            jobs.append(
                SlideJob(source, slide, slide_dir, tfrecord, os.path.join(out_dir, f"{slide}.index.npz"))
            )
    return jobs


@dataclass(frozen=True)
class ExtractJob:
    """One slide file of a source with ``slides`` (and no ``tiles``): extracted straight to its TFRecord."""

    source: str
    slide: str
    path: str
    #: The slide's ROI file when the source's roi folder has one (``<roi>/<slide>.csv``), else None.
    roi: str | None
    roi_dir: str | None
    #: Microns per pixel from the config (``mpp_overrides`` of the slide, else the source's ``mpp``), or None.
    mpp: float | None
    tfrecord: str
    index: str
    #: What the extract rule writes last: the extraction report (tiles kept, removed, or why it was skipped).
    report: str
    #: The slide's thumbnail with its kept and removed tiles drawn (or why it has none), beside the report.
    thumbnail: str


def _slide_files(folder: str, source: str) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            return sorted(
                e.name for e in entries
                if not e.name.startswith(".") and e.name.lower().endswith(SLIDE_EXTENSIONS) and e.is_file()
            )
    except FileNotFoundError:
        raise ConfigError(
            f"sources.{source}.slides: the slides folder {folder!r} does not exist (working directory "
            f"{os.getcwd()!r}); fix the path"
        ) from None
    except NotADirectoryError:
        raise ConfigError(f"sources.{source}.slides: {folder!r} is a file, not a folder of slide files") from None


def _roi_files(folder: str, source: str) -> set[str]:
    try:
        with os.scandir(folder) as entries:
            return {e.name for e in entries if e.name.endswith(".csv") and e.is_file()}
    except FileNotFoundError:
        raise ConfigError(
            f"sources.{source}.roi: the ROI folder {folder!r} does not exist (working directory {os.getcwd()!r}); "
            "fix the path or remove 'roi'"
        ) from None
    except NotADirectoryError:
        raise ConfigError(
            f"sources.{source}.roi: {folder!r} is a file, not a folder of <slide>.csv ROI files"
        ) from None


def plan_extractions(config: dict, tile_jobs: list[SlideJob] = ()) -> list[ExtractJob]:
    """Every slide file of the sources that have ``slides`` and no ``tiles``, in a stable order.

    One ``os.scandir`` of each source's slides folder (and one of its roi folder); no slide is opened. Slides are
    the files with a slide extension (:data:`slidetiles.dataset.extraction.SLIDE_EXTENSIONS`, any case), named
    as Slideflow names them (:func:`slidetiles.slides.wsi.slide_name`). Two files of one name (``a.svs`` and
    ``a.tiff``) are an error naming both; so is a name in two sources, and an ``mpp_overrides`` entry naming no
    slide of its source. With ``on_bad_input: skip`` a name that would break paths is skipped with a warning.
    """
    label = tile_label(config["tile_px"], config["tile_um"])
    skip = config.get("on_bad_input", "error") == "skip"
    demo = demo_source(config)
    seen = {job.slide: job.source for job in tile_jobs}
    jobs: list[ExtractJob] = []
    for source in sorted(config["sources"]):
        spec = config["sources"][source]
        if spec.get("tiles") or not spec.get("slides"):
            continue
        try:
            check_name(source, "source name")
        except ValueError as exc:
            raise ConfigError(f"sources.{source}: {exc}") from None
        from slidetiles.slides.wsi import slide_name  # only when a source has slides (pulls in the slide readers)

        folder = os.path.normpath(spec["slides"])
        roi_dir = os.path.normpath(spec["roi"]) if spec.get("roi") else None
        rois = _roi_files(roi_dir, source) if roi_dir else set()
        out_dir = os.path.join(os.path.normpath(spec["tfrecords"]), label)
        if source == demo:
            # Written by the workflow's demo rules: the names are known before the files exist.
            files = demo_slide_files(int(config["demo"].get("n_slides", 30)))
        else:
            files = _slide_files(folder, source)
        if not files:
            message = f"sources.{source}.slides: no slide files in {folder!r}"
            if not skip:
                raise ConfigError(f"{message}; fix the path (slide extensions: .svs, .tif, .tiff, .ndpi, .mrxs ...)")
            log.warning("%s", message)
        by_name: dict[str, str] = {}
        for file in files:
            slide = slide_name(file)
            if slide in by_name:
                raise ConfigError(
                    f"sources.{source}.slides: {by_name[slide]!r} and {file!r} are both slide {slide!r} (the "
                    "slide name is the file name without its extension); rename or move one of them"
                )
            by_name[slide] = file
        overrides = spec.get("mpp_overrides") or {}
        unknown = sorted(set(overrides) - set(by_name))
        if unknown:
            raise ConfigError(
                f"sources.{source}.mpp_overrides: {', '.join(map(repr, unknown))} is no slide of {folder!r} "
                "(keys are slide names: file names without their extension)"
            )
        for slide, file in by_name.items():
            if not _usable_name(slide, f"sources.{source}.slides: {file!r}", f"slide file {file!r} of source {source}",
                                skip):
                continue
            _claim(seen, slide, source)
            mpp = overrides.get(slide, spec.get("mpp"))
            jobs.append(
                ExtractJob(
                    source=source,
                    slide=slide,
                    path=os.path.join(folder, file),
                    roi=os.path.join(roi_dir, f"{slide}.csv") if f"{slide}.csv" in rois else None,
                    roi_dir=roi_dir,
                    mpp=None if mpp is None else float(mpp),
                    tfrecord=os.path.join(out_dir, f"{slide}.tfrecords"),
                    index=os.path.join(out_dir, f"{slide}.index.npz"),
                    report=os.path.join("results", "extraction", source, f"{slide}.json"),
                    thumbnail=os.path.join("results", "extraction", source, f"{slide}.png"),
                )
            )
    return jobs


def extract_job_argument(job: ExtractJob, settings: dict) -> str:
    """The extract rule's one argument: the job and the run's extraction ``settings`` as compact, sorted JSON.

    >>> job = ExtractJob("lab", "s1", "slides/s1.svs", None, None, None, "t/s1.tfrecords", "t/s1.index.npz",
    ...                  "r/s1.json", "r/s1.png")
    >>> extract_job_argument(job, {"tile_px": 299})[:60]
    '{"job":{"index":"t/s1.index.npz","mpp":null,"path":"slides/'
    """
    fields = {key: getattr(job, key) for key in ("source", "slide", "path", "roi", "roi_dir", "mpp", "tfrecord", "index",
                                                 "report", "thumbnail")}
    return json.dumps({"job": fields, **settings}, sort_keys=True, separators=(",", ":"))


def _names(folder: str) -> set[str]:
    try:
        with os.scandir(folder) as entries:
            return {e.name for e in entries}
    except OSError:
        return set()


def lost_extractions(jobs: list[ExtractJob]) -> list[str]:
    """Messages for slides whose extraction report says a TFRecord/index was written that is gone now.

    Their TFRecords are written by the ``extract`` job beside its report (its declared output), so Snakemake
    does not see one deleted later. Costs one ``scandir`` per report folder and per TFRecord folder, and reads
    only the reports of slides without a TFRecord (those skipped, and those lost).
    """
    listed: dict[str, set[str]] = {}

    def present(path: str) -> bool:
        folder, name = os.path.split(path)
        if folder not in listed:
            listed[folder] = _names(folder)
        return name in listed[folder]

    lost = []
    for job in jobs:
        if not present(job.report) or (present(job.tfrecord) and present(job.index)):
            continue
        try:
            with open(job.report) as f:
                record = json.load(f)
        except (OSError, ValueError):
            continue
        for key in ("tfrecord", "index"):
            if record.get(key) and not present(record[key]):
                lost.append(
                    f"{record[key]} is missing, though {job.report} records that the extraction of slide {job.slide} "
                    f"wrote it; to extract the slide again, delete {job.report} (or add --forcerun {job.report})"
                )
    return lost


def _nul_bytes(value, where: str):
    """The key path of the first string in ``value`` holding a NUL byte (no file name can), or None."""
    if isinstance(value, str):
        return where if "\x00" in value else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _nul_bytes(item, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


def check_config(config: dict) -> None:
    """Cross-references the JSON schema cannot express; each error names the key and the allowed values."""
    bad = _nul_bytes(config, "")
    if bad:
        # os functions would raise a bare "embedded null byte" ValueError naming nothing.
        raise ConfigError(f"{bad}: the value contains a NUL byte (\\x00), which no path or name can hold; remove it")
    sources = sorted(config["sources"])
    datasets = sorted(config["datasets"])
    for name, spec in config["datasets"].items():
        for source in spec.get("sources") or []:
            if source not in config["sources"]:
                raise ConfigError(f"datasets.{name}.sources: {source!r} is not a source (sources: {', '.join(sources)})")
    for name, spec in (config.get("splits") or {}).items():
        where = f"splits.{name}"
        if spec["dataset"] not in config["datasets"]:
            raise ConfigError(f"{where}.dataset: {spec['dataset']!r} is not a dataset (datasets: {', '.join(datasets)})")
        # The split spec fills the defaults and checks the plan (the schema only checks types); it also says which
        # old key names (k, site_column) a plan still uses. Imported here: every cluster job parses the Snakefile,
        # and only configs with splits should pay for importing the split planners.
        from slidetiles.splits.spec import SplitSpec

        try:
            SplitSpec.from_config(spec, where=where)
        except SplitError as e:
            raise ConfigError(str(e)) from None
