"""``Dataset.extract_tiles``: every source's slides to ``<tfrecords>/<tile label>/<slide>.tfrecords`` (+ index).

Slideflow's arguments and defaults. Slides are the files in each source's ``slides`` folder with a slide
extension (and, when annotations are loaded, only the slides that pass the Dataset's filters, as Slideflow's
``slide_paths()`` selects them); ROIs come from the source's ``roi`` folder (``<roi>/<slide>.csv``). A slide whose
TFRecord already exists is skipped with ``skip_extracted`` (TFRecords appear only when complete, so an existing one
is never a half-written one). A slide that cannot be read (corrupt, no MPP, smaller than a tile, missing ROI with
``roi_method='inside'``) is logged with its reason and skipped, so one bad file does not stop a cohort; the
reasons are in the returned reports.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from slidetiles.dataset.labels import label_rows
from slidetiles.errors import DatasetError, ROIError, SlideError

log = logging.getLogger(__name__)

#: Slide file extensions looked for in a source's slides folder: Slideflow's, less its plain images (jpg, png: no
#: pyramid, no MPP), plus OpenSlide's DICOM.
SLIDE_EXTENSIONS = (".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif", ".dcm")


@dataclass
class SlideFailure:
    """A slide that was skipped because it could not be tiled: its path and the error."""

    path: str
    error: Exception
    num_tiles: int = 0


def slide_files(folder: str | None) -> list[str]:
    """Slide files of a folder (not recursive), sorted by name."""
    if not folder or not os.path.isdir(folder):
        return []
    with os.scandir(folder) as it:
        names = sorted(e.name for e in it if e.is_file() and e.name.lower().endswith(SLIDE_EXTENSIONS))
    return [os.path.join(folder, n) for n in names]


def extract_dataset_tiles(
    dataset,
    *,
    save_tiles: bool = False,
    save_tfrecords: bool = True,
    source: str | list[str] | None = None,
    stride_div: int = 1,
    enable_downsample: bool = True,
    roi_method: str = "auto",
    roi_filter_method: str | float = "center",
    skip_extracted: bool = True,
    randomize_origin: bool = False,
    qc: str | None = None,
    report: bool = True,
    use_edge_tiles: bool = False,
    artifact_labels=(),
    mpp_override: float | None = None,
    **kwargs,
) -> dict:
    """Extract tiles of every slide of the Dataset's sources; returns ``{slide path: report or SlideFailure}``.

    Example:
        >>> ds = slidetiles.Dataset("datasets.json", tile_px=299, tile_um=302)  # doctest: +SKIP
        >>> reports = ds.extract_tiles(qc="otsu")  # doctest: +SKIP
    """
    # The slide readers (pyvips, OpenSlide) are heavy and only needed here: imported on use.
    from slidetiles.slides.wsi import WSI, slide_name

    if not dataset.tile_px or not dataset.tile_um:
        raise DatasetError("extract_tiles() needs a tile size: Dataset(..., tile_px=299, tile_um=302)")
    label = dataset.label
    # Slideflow's qc_* options, by our names (qc_mpp: we judge blur at Slideflow's default, 4x the tile's um/px).
    qc_names = {"qc_filter_threshold": "filter_threshold", "qc_blur_radius": "blur_radius",
                "qc_blur_threshold": "blur_threshold"}
    qc_options = {qc_names[k]: kwargs.pop(k) for k in list(kwargs) if k in qc_names}
    kwargs.pop("qc_mpp", None)
    names = dataset.sources_names if source is None else ([source] if isinstance(source, str) else list(source))
    wanted = None
    if dataset.state.loaded.annotations is not None:
        # Slideflow's slide_paths(): every annotated slide passing the filters, TFRecord or not.
        wanted = set(label_rows(dataset.state).index)
    results: dict = {}
    for name in names:
        folders = dataset.sources.get(name)
        if folders is None:
            raise DatasetError(f"extract_tiles(source={name!r}): no such source; the sources are {names}")
        if save_tfrecords and not folders.get("tfrecords"):
            log.error("source %s has no tfrecords folder: skipped", name)
            continue
        if save_tiles and not folders.get("tiles"):
            log.error("source %s has no tiles folder: skipped", name)
            continue
        tfrecord_dir = os.path.join(folders["tfrecords"], label) if save_tfrecords else None
        tiles_dir = os.path.join(folders["tiles"], label) if save_tiles else None
        for path in slide_files(folders.get("slides")):
            slide = slide_name(path)
            if wanted is not None and slide not in wanted:
                continue
            if skip_extracted and tfrecord_dir and os.path.exists(os.path.join(tfrecord_dir, f"{slide}.tfrecords")):
                log.info("%s: already extracted, skipped", slide)
                continue
            try:
                wsi = WSI(
                    path,
                    dataset.tile_px,
                    dataset.tile_um,
                    stride_div,
                    enable_downsample=enable_downsample,
                    roi_dir=folders.get("roi"),
                    roi_method=roi_method,
                    roi_filter_method=roi_filter_method,
                    origin="random" if randomize_origin else (0, 0),
                    use_edge_tiles=use_edge_tiles,
                    artifact_labels=artifact_labels,
                    mpp=mpp_override,
                )
                if qc is not None:
                    wsi.qc(qc, **qc_options)
                results[path] = wsi.extract_tiles(tfrecord_dir, tiles_dir, report=report, **kwargs)
            except (SlideError, ROIError) as exc:
                log.error("%s: skipped: %s", slide, exc)
                results[path] = SlideFailure(path, exc)
    return results
