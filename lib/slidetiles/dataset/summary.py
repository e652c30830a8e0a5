"""``Dataset.summary()``: the tables Slideflow's summary prints, plus what did not match, rendered from a
:class:`~slidetiles.dataset.state.DatasetState`."""

from __future__ import annotations

from tabulate import tabulate

from slidetiles.dataset.state import DatasetState

TABLE_FORMAT = "simple_outline"


def _names(items: list[str], max_names: int) -> str:
    if not items:
        return ""
    shown = ", ".join(items[:max_names])
    return shown + (f", ... ({len(items) - max_names} more)" if len(items) > max_names else "")


def render_summary(state: DatasetState, *, max_names: int = 10) -> str:
    """The summary text of a Dataset's ``state`` (see :meth:`Dataset.summary`)."""
    loaded, spec, selection = state.loaded, state.spec, state.selection
    table = selection.table
    slides = table["slide"].tolist()
    patients = set(table["patient"].dropna()) if loaded.annotations is not None else set()
    rois = loaded.roi_files()
    with_roi = [s for s in slides if s in rois]
    patient_of = dict(zip(table["slide"], table["patient"]))
    patients_with_roi = {patient_of[s] for s in with_roi if patient_of[s] is not None}
    if loaded.origin:
        configured = f"{loaded.origin} (manifest)"
    else:
        configured = loaded.config or "<paths given directly>"

    parts = ["Overview:"]
    parts.append(
        tabulate(
            [
                ("Configuration file:", configured),
                ("Tile size (px):", loaded.tile_px),
                ("Tile size (um):", loaded.tile_um),
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
    as_json = spec.to_json()  # the filters as Dataset.filters shows them: lists, not tuples
    parts.append(
        tabulate(
            [
                ("Filters:", repr(as_json["filters"])),
                ("Filter Blank:", repr(as_json["filter_blank"])),
                ("Min Tiles:", str(spec.min_tiles)),
                ("Clip:", spec.clip.describe() if spec.clip else "none"),
                ("Balance:", spec.balance.describe() if spec.balance else "none"),
            ],
            tablefmt=TABLE_FORMAT,
            disable_numparse=True,
        )
    )
    parts.append("\nSources:")
    if not loaded.sources:
        parts.append("<None>")
    for source in loaded.sources:
        parts.append(f"\n{source.name}")
        rows = [(key, "" if value is None else value) for key, value in source.folders().items()]
        rows.append(("label", loaded.label or ""))
        parts.append(tabulate(rows, tablefmt=TABLE_FORMAT, disable_numparse=True))
    for source, folder in loaded.catalog.missing_dirs:
        parts.append(f"(source {source!r}: no TFRecord folder {folder})")

    total = int(table["total"].sum())
    clipped = int(table["clipped"].sum())
    line = f"\nNumber of tiles in TFRecords: {clipped}"
    if clipped != total:
        line += f" (of {total} before clipping)"
    parts.append(line)
    parts.append(f"TFRecords: {len(table)}")
    parts.append("Annotation columns:")
    parts.append(repr(loaded.columns) if loaded.annotations is not None else "<NA>")

    unmatched = selection.unmatched()
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
