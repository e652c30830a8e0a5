"""Slides of each source, found cheaply when the Snakefile is parsed.

Every cluster job re-parses the Snakefile, so discovery is one ``os.scandir`` per source (never a walk over the
tiles), sorted so the DAG is the same on every machine.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from slidetiles.dataset import tile_label
from slidetiles.io.tiles import check_name

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration problem found while planning the workflow; the message names the key."""


@dataclass(frozen=True)
class SlideJob:
    """One slide of one source: where its tiles are and where its TFRecord and index go."""

    source: str
    slide: str
    tiles_dir: str
    tfrecord: str
    index: str
    #: The tiles come from the workflow's demo rule (they do not exist yet when the Snakefile is parsed).
    from_demo: bool = False


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


def demo_slide_names(n_slides: int) -> list[str]:
    """Slide names :func:`slidetiles.demo.write_demo_tiles` gives ``n_slides`` slides."""
    return [f"slide_{i + 1:03d}" for i in range(n_slides)]


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
    from slidetiles.io.tiles import TILE_EXTENSIONS

    with os.scandir(folder) as entries:
        return any(os.path.splitext(e.name)[1].lower() in TILE_EXTENSIONS for e in entries)


def plan_slides(config: dict) -> list[SlideJob]:
    """Every (source, slide) whose TFRecord the workflow builds, in a stable order.

    Sources without ``tiles`` contribute no jobs (their TFRecords exist already). With ``on_bad_input: skip``,
    slide names that would break paths are skipped with a warning, and so are slide folders without tile
    images (that costs one extra ``scandir`` per slide, so it happens only in skip mode; in error mode the
    slide's job stops with a message naming the folder).
    """
    label = tile_label(config["tile_px"], config["tile_um"])
    demo = config.get("demo") or {}
    demo_source = demo.get("source") if demo.get("enabled") else None
    if demo_source is not None and demo_source not in config["sources"]:
        raise ConfigError(f"demo.source: {demo_source!r} is not one of sources ({', '.join(config['sources'])})")
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
        if source == demo_source:
            slides = demo_slide_names(int(demo.get("n_slides", 30)))
        else:
            slides = _slide_folders(tiles_dir, source)
        for slide in slides:
            try:
                check_name(slide)
            except ValueError as exc:
                if not skip:
                    raise ConfigError(f"sources.{source}: {exc}") from None
                log.warning("skipping slide folder %r of source %s: %s", slide, source, exc)
                continue
            slide_dir = os.path.join(tiles_dir, slide)
            if skip and source != demo_source and not _has_tiles(slide_dir):
                log.warning("skipping %s: no tile images in the slide folder", slide_dir)
                continue
            if slide in seen:
                raise ConfigError(
                    f"slide {slide!r} is in two sources ({seen[slide]} and {source}); slide names must be unique"
                )
            seen[slide] = source
            tfrecord = os.path.join(out_dir, f"{slide}.tfrecords")
            jobs.append(
                SlideJob(source, slide, slide_dir, tfrecord, os.path.join(out_dir, f"{slide}.index.npz"),
                         source == demo_source)
            )
    return jobs


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
        strategy = spec.get("strategy", "k-fold")
        if strategy in ("fixed", "bootstrap") and spec.get("fraction") is None:
            raise ConfigError(f"{where}.fraction: strategy {strategy!r} needs a validation fraction, e.g. 0.2")
        if strategy == "k-fold-manual" and not spec.get("k_fold_header"):
            raise ConfigError(f"{where}.k_fold_header: strategy 'k-fold-manual' needs the annotation column of folds")
        if strategy.startswith("k-fold") and strategy != "k-fold-manual" and spec.get("k", 3) < 2:
            raise ConfigError(f"{where}.k: {strategy!r} needs k >= 2 folds, got {spec.get('k')}")
