"""``Dataset.summary()``: the tables Slideflow's summary prints, plus what did not match."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tabulate import tabulate

if TYPE_CHECKING:
    from slidetiles.dataset.dataset import Dataset

TABLE_FORMAT = "simple_outline"


def _names(items: list[str], max_names: int) -> str:
    if not items:
        return ""
    shown = ", ".join(items[:max_names])
    return shown + (f", ... ({len(items) - max_names} more)" if len(items) > max_names else "")


def render_summary(ds: "Dataset", *, max_names: int = 10) -> str:
    """The summary text of ``ds`` (see :meth:`Dataset.summary`)."""
    setup = ds._setup
    table = ds._selection().table
    slides = table["slide"].tolist()
    patients = set(table["patient"].dropna()) if setup.annotations is not None else set()
    rois = ds._roi_files()
    with_roi = [s for s in slides if s in rois]
    patient_of = dict(zip(table["slide"], table["patient"]))
    patients_with_roi = {patient_of[s] for s in with_roi if patient_of[s] is not None}
    if setup.origin:
        configured = f"{setup.origin} (manifest)"
    else:
        configured = setup.config or "<paths given directly>"

    parts = ["Overview:"]
    parts.append(
        tabulate(
            [
                ("Configuration file:", configured),
                ("Tile size (px):", setup.tile_px),
                ("Tile size (um):", setup.tile_um),
                ("Slides:", len(slides)),
                ("Patients:", len(patients)),
                ("Slides with ROIs:", len(with_roi)),
                ("Patients with ROIs:", len(patients_with_roi)),
            ],
            tablefmt=TABLE_FORMAT,
            disable_numparse=True,
        )
    )
    parts.append("\nFilters:")
    parts.append(
        tabulate(
            [
                ("Filters:", repr(ds.filters)),
                ("Filter Blank:", repr(ds.filter_blank)),
                ("Min Tiles:", str(ds.min_tiles)),
                ("Clip:", ds._clip.describe() if ds._clip else "none"),
                ("Balance:", ds._balance.describe() if ds._balance else "none"),
            ],
            tablefmt=TABLE_FORMAT,
            disable_numparse=True,
        )
    )
    parts.append("\nSources:")
    if not setup.sources:
        parts.append("<None>")
    for source in setup.sources:
        parts.append(f"\n{source.name}")
        rows = [(key, "" if value is None else value) for key, value in source.folders().items()]
        rows.append(("label", setup.label or ""))
        parts.append(tabulate(rows, tablefmt=TABLE_FORMAT, disable_numparse=True))
    for source, folder in setup.catalog.missing_dirs:
        parts.append(f"(source {source!r}: no TFRecord folder {folder})")

    total = int(table["total"].sum())
    clipped = int(table["clipped"].sum())
    line = f"\nNumber of tiles in TFRecords: {clipped}"
    if clipped != total:
        line += f" (of {total} before clipping)"
    parts.append(line)
    parts.append(f"TFRecords: {len(table)}")
    parts.append("Annotation columns:")
    parts.append(repr(ds._columns()) if setup.annotations is not None else "<NA>")

    unmatched = ds.unmatched
    rows = [
        ("Annotated slides without a TFRecord", unmatched["slides_without_tfrecord"]),
        ("TFRecords without an annotation", unmatched["tfrecords_without_annotation"]),
        ("Empty TFRecords (0 tiles)", unmatched["empty_tfrecords"]),
    ]
    parts.append("\nUnmatched (not in the dataset):")
    parts.append(
        tabulate(
            [(what, len(items), _names(items, max_names)) for what, items in rows],
            headers=("", "count", "names"),
            tablefmt=TABLE_FORMAT,
            disable_numparse=True,
        )
    )
    return "\n".join(parts)
