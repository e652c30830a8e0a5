"""One function per workflow rule, and :func:`run_rule`, which the ``scripts/`` entry points call.

:func:`run_rule` sends log records to the rule's ``log:`` file and turns every expected failure (bad tiles,
a missing folder, a stale manifest, an impossible split...) into one clear line naming the file, slide or key,
in the log and on stderr, and exit status 1: never a bare traceback as the only explanation. Expected failures are
:class:`~slidetiles.errors.SlidetilesError` and ``OSError``; anything else is a bug, logged with its traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings

from slidetiles.errors import MissingMPPError, ROIError, SlideError, SlidetilesError

# Each step imports the rest of the library inside its function: a job runs one step, and a per-slide job must not
# pay for pandas, matplotlib, the slide readers or protobuf that only other rules use.

log = logging.getLogger("slidetiles.pipeline")


def run_rule(snakemake, step, **kwargs) -> None:
    """Run ``step(**kwargs)`` for a Snakemake ``script:``, logging to the rule's log file."""
    run_step(step, log_path=str(snakemake.log[0]) if snakemake.log else None,
             rule=getattr(snakemake, "rule", "?"), **kwargs)


def run_step(step, *, log_path: str | None, rule: str, **kwargs) -> None:
    """Run ``step(**kwargs)`` with its log records in ``log_path`` (all) and on stderr (warnings and errors).

    An expected failure (a :class:`~slidetiles.errors.SlidetilesError` or an ``OSError`` such as a missing file)
    becomes one line naming what failed, and exit status 1. Any other exception is a programming error: it is
    logged with its traceback, so the rule's log shows where it came from, and the exit status is 1 too.
    """
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING)  # the log file gets everything; the terminal only what needs a look
    handlers: list[logging.Handler] = [console]
    if log_path:
        os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers, force=True)
    try:
        step(**kwargs)
    except (SlidetilesError, OSError) as error:
        log.error("rule %s failed: %s", rule, error)
        sys.exit(1)
    except Exception:
        log.exception("rule %s failed with an unexpected error (a bug in slidetiles; please report it)", rule)
        sys.exit(1)


# -- demo ------------------------------------------------------------------------------------------------------------
def make_demo_slide(*, path: str, seed: int) -> None:
    """One demo slide at ``path`` (``<out_dir>/slides/<file>``)."""
    from slidetiles.demo import write_demo_slide

    folder, file = os.path.split(path)
    slide = write_demo_slide(os.path.dirname(folder), file, seed=seed)
    log.info("wrote %s: %d x %d px at %g um/px (%s)", path, slide.width, slide.height, slide.mpp, slide.kind)


def make_demo_annotations(*, path: str, demo: dict) -> None:
    """The demo cohort's annotations CSV at ``path`` (``<out_dir>/annotations.csv``)."""
    from slidetiles.demo import write_demo_annotations

    table = write_demo_annotations(
        os.path.dirname(path), n_slides=demo["n_slides"], n_sites=demo["n_sites"], seed=demo["seed"]
    )
    log.info("wrote %s: %d slides of %d patients", path, len(table), table["patient"].nunique())


# -- TFRecords -------------------------------------------------------------------------------------------------------
def write_slide_tfrecord(*, tiles_dir: str, tfrecord: str, coord_pattern: str, on_bad_input: str) -> None:
    """One slide folder -> one TFRecord (no index: the next rule builds it, checking every CRC)."""
    from slidetiles.io.tiles import write_tfrecords_single

    slide = os.path.splitext(os.path.basename(tfrecord))[0]
    skipped: list | None = [] if on_bad_input == "skip" else None
    write_tfrecords_single(
        tiles_dir,
        os.path.dirname(tfrecord),
        os.path.basename(tfrecord),
        slide,
        coord_pattern=coord_pattern,
        index=False,
        skipped=skipped,
    )
    if skipped:
        log.warning("%s: skipped %d unreadable tile(s): %s", slide, len(skipped), "; ".join(map(str, skipped)))
    log.info("wrote %s", tfrecord)


#: Options of the config's ``extraction`` key that go to :meth:`slidetiles.WSI.extract_tiles` as they are.
_EXTRACT_OPTIONS = ("whitespace_fraction", "whitespace_threshold", "grayspace_fraction", "grayspace_threshold",
                    "img_format", "quality", "max_tiles")
#: Slideflow's ``qc_*`` extraction options -> the keyword names of :meth:`slidetiles.WSI.qc`.
_QC_OPTIONS = {"qc_filter_threshold": "filter_threshold", "qc_blur_radius": "blur_radius",
               "qc_blur_threshold": "blur_threshold"}


def extract_slide(
    *,
    slide_path: str,
    report: str,
    job: dict,
    tile_px: int,
    tile_um,
    extraction: dict,
    on_bad_input: str,
    threads: int = 1,
    thumbnail: str | None = None,
) -> None:
    """One slide file -> ``<tfrecords>/<label>/<slide>.tfrecords`` + ``.index.npz``, then the JSON ``report``.

    ``job`` holds the slide's ``source``, ``slide``, ``tfrecord``, ``index``, ``roi_dir`` and ``mpp`` (from the
    config; None: the slide's own). The TFRecord and index are written by the library atomically (nothing
    half-written at their paths); an earlier run's are removed first, so a slide that now fails leaves none.
    A slide that cannot be tiled (unreadable, no microns per pixel, smaller than a tile, missing ROI) or keeps no
    tile after ROI/QC/background filtering stops the job with a message naming it and the config key to change;
    with ``on_bad_input: skip`` it is logged and the report records why it has no TFRecord.

    ``thumbnail`` (a PNG path) gets the slide's thumbnail with its kept tiles and the removed ones by reason
    (:func:`slidetiles.slides.preview.draw_extraction`); for a skipped slide, the reason is written on it, over
    the slide's plain thumbnail when there is no extraction to draw and the file opens, alone when it does not.

    Example:
        >>> extract_slide(slide_path="slides/s1.svs", report="results/extraction/S/s1.json", job=job, tile_px=299,
        ...               tile_um=302, extraction={}, on_bad_input="skip",
        ...               thumbnail="results/extraction/S/s1.png")  # doctest: +SKIP
    """
    from slidetiles.slides.extract import EmptySlideWarning
    from slidetiles.slides.wsi import WSI

    source, slide = job["source"], job["slide"]
    tfrecord, index = job["tfrecord"], job["index"]
    for stale in (tfrecord, index):
        if os.path.lexists(stale):
            os.remove(stale)
    opts = dict(extraction)
    record = {"source": source, "slide": slide, "path": slide_path, "tfrecord": None, "index": None,
              "num_tiles": 0, "removed": {}, "skipped": None}
    problem = None
    wsi = result = None
    try:
        wsi = WSI(
            slide_path,
            tile_px,
            tile_um,
            opts.get("stride_div", 1),
            enable_downsample=opts.get("enable_downsample", True),
            roi_dir=job.get("roi_dir"),
            roi_method=opts.get("roi_method", "auto"),
            roi_filter_method=opts.get("roi_filter_method", "center"),
            use_edge_tiles=opts.get("use_edge_tiles", False),
            mpp=job.get("mpp"),
        )
        if opts.get("qc"):
            wsi.qc(opts["qc"], **{name: opts[key] for key, name in _QC_OPTIONS.items() if opts.get(key) is not None})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EmptySlideWarning)  # said below, with the config keys to change
            result = wsi.extract_tiles(
                os.path.dirname(tfrecord),
                num_threads=max(1, int(threads)),
                **{key: opts[key] for key in _EXTRACT_OPTIONS if opts.get(key) is not None},
            )
        record.update(mpp=wsi.mpp, num_tiles=int(result.num_tiles), removed=dict(result.removed))
        if result.tfrecord is None:
            problem = (
                f"slide {slide} ({slide_path}): no tile left after filtering (removed: {result.removed or 'none'}), "
                "so no TFRecord was written. If it has tissue, loosen the config's extraction options "
                "(qc, whitespace_fraction, grayspace_fraction, roi_method) or check its ROI"
            )
        else:
            record.update(tfrecord=result.tfrecord, index=index)
    except MissingMPPError:
        problem = (
            f"slide {slide} ({slide_path}) records no microns per pixel; set it in the config: "
            f"sources.{source}.mpp: 0.25 (every slide of the source) or sources.{source}.mpp_overrides: "
            f"{{{slide}: 0.25}} (this slide), with your scanner's um/px (about 0.25 at 40x, 0.5 at 20x)"
        )
    except (SlideError, ROIError) as exc:
        problem = f"slide {slide} of source {source}: {exc}"
    if problem is not None:
        if on_bad_input != "skip":
            raise SlidetilesError(f"{problem}. Or set on_bad_input: skip to leave the slide out")
        log.warning("%s; skipped (on_bad_input: skip)", problem)
        record["skipped"] = problem
    if thumbnail:
        _draw_thumbnail(thumbnail, wsi, result, slide_path, problem and f"skipped: {problem}")
    _write_text(report, json.dumps(record, indent=1, sort_keys=True, default=str) + "\n")
    log.info("%s: %d tiles%s", slide, record["num_tiles"], f" -> {tfrecord}" if record["tfrecord"] else "")


def _draw_thumbnail(path: str, wsi, result, slide_path: str, note: str | None) -> None:
    """The extraction drawn on the slide, or ``note`` (why there is none) over its plain thumbnail if it opens."""
    from slidetiles.slides import preview

    if wsi is not None and result is not None:
        try:
            preview.draw_extraction(wsi, result, path, note=note)
            return
        except (SlideError, OSError, ValueError) as exc:  # the tiles are written; a picture is no reason to fail
            log.warning("%s: cannot draw the extraction on the thumbnail (%s); writing a note instead", slide_path, exc)
            note = f"{note + '; ' if note else ''}no thumbnail: {exc}"
    preview.draw_note(path, note or "no extraction to draw", slide_path=slide_path)


def index_tfrecord(*, tfrecord: str, index: str) -> None:
    from slidetiles.io.tfrecord2idx import create_index

    written = create_index(tfrecord, index)
    log.info("wrote %s", written)


# -- manifests -------------------------------------------------------------------------------------------------------
def build_manifest(
    *,
    manifest: str,
    summary: str,
    tiles_per_slide: str,
    dataset: dict,
    sources: dict,
    tile_px: int,
    tile_um,
    annotations: str,
    on_bad_input: str,
    extraction_reports: list[str] = (),
) -> None:
    """Filter, clip and balance one dataset and write its manifest, summary and tiles-per-slide table.

    ``extraction_reports`` (the ``extract`` jobs' JSON reports): every TFRecord a report says was written must
    still be there, so a deleted one is an error saying how to extract it again, not a slide silently missing.
    """
    from slidetiles.dataset import Dataset

    _check_extracted(extraction_reports)

    ds = Dataset(
        config={name: dict(spec) for name, spec in sources.items()},
        sources=dataset.get("sources") or None,
        tile_px=tile_px,
        tile_um=tile_um,
        annotations=annotations,
        jobs=1,
        progress=False,
    )
    unmatched = ds.unmatched
    missing = unmatched.get("tfrecords_without_annotation", [])
    if missing:
        message = (
            f"{len(missing)} slide(s) have a TFRecord but no row in {annotations}: {', '.join(missing[:20])}"
            f"{' ...' if len(missing) > 20 else ''}. Add them to the annotations, or set on_bad_input: skip"
        )
        if on_bad_input != "skip":
            raise SlidetilesError(message)
        log.warning("%s (skipped)", message)
    ds = ds.filter(
        filters=dataset.get("filters") or None,
        filter_blank=dataset.get("filter_blank") or None,
        min_tiles=dataset.get("min_tiles") or None,
    )
    clip = dataset.get("clip")
    if clip:
        ds = ds.clip(clip["max_tiles"], strategy=clip.get("strategy"), headers=clip.get("headers"))
    balance = dataset.get("balance")
    if balance:
        ds = ds.balance(balance.get("headers"), strategy=balance.get("strategy", "category"))
    if not ds.tfrecords():
        raise SlidetilesError(f"the dataset is empty after filtering ({dataset}); loosen its filters")
    ds.to_manifest(manifest)
    _write_text(summary, ds.summary(show=False))
    rows = ["tfrecord\tslide\tpatient\ttotal\tclipped"]
    table = ds.slide_table()
    for row in table.itertuples(index=False):
        rows.append(f"{row.path}\t{row.slide}\t{row.patient}\t{row.total}\t{row.clipped}")
    _write_text(tiles_per_slide, "\n".join(rows) + "\n")
    log.info("%s: %d TFRecords, %d tiles", manifest, len(ds.tfrecords()), ds.num_tiles)


def _check_extracted(reports) -> None:
    """A TFRecord or index that an extraction report says was written must still be there."""
    for report in reports:
        with open(report) as f:
            record = json.load(f)
        if record.get("skipped"):
            log.info("slide %s has no TFRecord: %s", record.get("slide"), record["skipped"])
        for key in ("tfrecord", "index"):
            path = record.get(key)
            if path and not os.path.exists(path):
                raise SlidetilesError(
                    f"{path} is missing, though {report} records that the extraction of slide "
                    f"{record.get('slide')} wrote it; to extract the slide again, delete {report} (or add "
                    f"--forcerun {report})"
                )


def _write_text(path: str, text: str) -> None:
    from slidetiles.io.writer import atomic_write

    with atomic_write(path, "w") as f:
        f.write(text)


# -- splits ----------------------------------------------------------------------------------------------------------
def make_split(*, manifest: str, plan: dict, splits: str, png: str, svg: str) -> None:
    """One split plan over a manifest's slides -> splits JSON (Slideflow's format) and composition plots.

    ``plan`` is a config plan (``splits.<name>``; see :meth:`~slidetiles.splits.spec.SplitSpec.from_config`, which
    fills the defaults and still reads the old key names). The JSON holds the one entry this plan gives, computed
    afresh from the manifest and the plan (Snakemake removes outputs before a job runs), so the same inputs and seed
    give the same bytes. Strategies Slideflow never saves (``bootstrap``, ``none``) are recorded in the same format
    (:meth:`~slidetiles.splits.SplitPlan.record`) so every plan leaves an artifact.
    """
    from slidetiles.dataset import Dataset
    from slidetiles.dataset.splitting import plan_dataset_split
    from slidetiles.splits import SplitSpec
    from slidetiles.splits.plots import plot_split_composition
    from slidetiles.splits.splits_file import dumps_splits

    spec = SplitSpec.from_config(plan, where=f"split {os.path.splitext(os.path.basename(splits))[0]}")
    result = plan_dataset_split(Dataset.from_manifest(manifest), spec)
    _write_text(splits, dumps_splits([result.record()]))
    for path in (png, svg):
        plot_split_composition(result, path)
    log.info("%s: %s, %d iteration(s) over %d slides", splits, result.strategy, result.k, len(result.slides))


# -- report ----------------------------------------------------------------------------------------------------------
def make_report(
    *,
    manifests: list[str],
    summaries: list[str],
    splits: list[str],
    plots: list[str],
    html: str,
    extractions: list[str] = (),
    tiles_tsv: str | None = None,
) -> None:
    """The HTML page (dataset summaries and distributions of tiles per slide, slide extraction, split
    compositions, stage timings) and, from the ``extract`` jobs' JSON reports, ``tiles_tsv``: one row per slide
    of a slides source (grid tiles, kept, removed by reason, why skipped, its thumbnail), which the page links.

    Example:
        >>> make_report(manifests=["results/manifests/all.json"], summaries=["results/manifests/all.summary.txt"],
        ...             splits=[], plots=[], html="results/report.html",
        ...             extractions=["results/extraction/S/s1.json"],
        ...             tiles_tsv="results/extraction/tiles_per_slide.tsv")  # doctest: +SKIP
    """
    from slidetiles.pipeline.report import extraction_table, render_report, write_extraction_table

    table = extraction_table(list(extractions))
    if tiles_tsv:
        os.makedirs(os.path.dirname(tiles_tsv) or ".", exist_ok=True)
        write_extraction_table(table, tiles_tsv)
    _write_text(html, render_report(manifests=manifests, summaries=summaries, splits=splits, plots=plots,
                                    extraction=table, page=html, tiles_tsv=tiles_tsv))
    log.info("wrote %s (%d slides extracted)", html, len(table))
