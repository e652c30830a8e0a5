"""The manifest JSON: a filtered Dataset written between pipeline stages and read by the loaders.

What is written and read is the Dataset's :class:`~slidetiles.dataset.state.DatasetState`:
:func:`manifest_document` turns a state into the document, :func:`read_state` a manifest back into a state (which
``Dataset.from_manifest`` wraps).

Shape (``sort_keys=True, indent=2``; same Dataset, same bytes: no timestamps, weights as round-trip floats)::

    {"format": "slidetiles-manifest", "version": 1,
     "tile_px": 299, "tile_um": "10x", "label": "299px_10x",
     "sources": {name: {"slides", "roi", "tiles", "tfrecords"}},
     "annotations": {"path": CSV or null, "sha256": hex or null (no annotations)},
     "filters": {column: [values]}, "filter_blank": [columns], "min_tiles": n,
     "clip": {"max_tiles", "strategy", "headers"} or null, "balance": {"headers", "strategy"} or null,
     "slides": {slide: {column: value, ...}},            # annotation row of every retained slide
     "tfrecords": {path: {"slide", "patient", "total", "clipped", "weight", "size", "mtime_ns"}},
     "unmatched": {"slides_without_tfrecord": [...], "tfrecords_without_annotation": [...]}}

``size``/``mtime_ns`` are those of the TFRecord when its tiles were counted: a later stage compares them with the
file on disk to notice a TFRecord rewritten after the manifest (:class:`~slidetiles.errors.StaleManifestError`).
Paths are as the Dataset holds them; relative paths are relative to the working directory (Snakemake's
convention). ``"base"`` records that directory relative to the manifest's own folder (``"../.."`` for
``results/manifests/x.json``), so a training script started anywhere else still finds the TFRecords: relative
paths are then read from there (:func:`rebase`). Being relative, it keeps the bytes the same on every machine.
"""

from __future__ import annotations

import json
import os

from slidetiles.dataset.annotations import annotations_from_rows
from slidetiles.dataset.catalog import Catalog, make_frame
from slidetiles.dataset.sources import parse_sources
from slidetiles.dataset.state import DatasetState, LoadedData, SelectionSpec
from slidetiles.errors import DatasetError, StaleManifestError, listing
from slidetiles.io.writer import atomic_write

FORMAT = "slidetiles-manifest"
VERSION = 1
#: Stale TFRecords listed in full in the error.
SHOWN = 20


def manifest_document(state: DatasetState) -> dict:
    """The manifest of ``state`` (a Dataset's :attr:`~slidetiles.Dataset.state`) as a JSON-ready dict."""
    loaded = state.loaded
    sel = state.selection
    table = sel.table
    ann = loaded.annotations
    if ann is not None:
        rows = ann.frame.loc[sorted(table["slide"])]
        slides = {slide: record for slide, record in zip(rows.index, rows.to_dict("records"))}
    else:
        slides = {slide: {} for slide in sorted(table["slide"])}
    tfrecords = {}
    for row in table.itertuples(index=False):
        tfrecords[row.path] = {
            "slide": row.slide,
            "patient": row.patient,
            "total": int(row.total),
            "clipped": int(row.clipped),
            "weight": float(row.weight),
            "size": int(row.size),
            "mtime_ns": int(row.mtime_ns),
        }
    return {
        "format": FORMAT,
        "version": VERSION,
        "tile_px": loaded.tile_px,
        "tile_um": loaded.tile_um,
        "label": loaded.label,
        "sources": {s.name: s.folders() for s in loaded.sources},
        "annotations": {"path": ann.path if ann else None, "sha256": ann.sha256 if ann else None},
        **state.spec.to_json(),  # filters, filter_blank, min_tiles, clip, balance
        "slides": slides,
        "tfrecords": tfrecords,
        "unmatched": {
            "slides_without_tfrecord": list(sel.slides_without_tfrecord),
            "tfrecords_without_annotation": list(sel.tfrecords_without_annotation),
        },
    }


def write_manifest(document: dict, path: str | os.PathLike) -> str:
    """Write ``document`` as JSON atomically (temporary file in the same folder, then rename)."""
    path = os.fspath(path)
    document = {**document, "base": os.path.relpath(os.getcwd(), os.path.dirname(os.path.abspath(path)))}
    text = json.dumps(document, sort_keys=True, indent=2, allow_nan=False) + "\n"
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    with atomic_write(path, "w") as f:
        f.write(text)
    return path


def read_manifest(path: str | os.PathLike) -> dict:
    """Load a manifest, checking it is one (format and version)."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except FileNotFoundError:
        raise DatasetError(f"{path}: manifest not found") from None
    except ValueError as exc:
        raise DatasetError(f"{path}: not a JSON manifest ({exc}); re-run the rule that writes it") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise DatasetError(f"{path}: not a slidetiles manifest (no \"format\": \"{FORMAT}\")")
    if document.get("version") != VERSION:
        raise DatasetError(
            f"{path}: manifest version {document.get('version')!r}, this slidetiles reads version {VERSION}; "
            "re-run the rule that writes it"
        )
    return document


def rebase(document: dict, path: str | os.PathLike) -> dict:
    """``document`` with relative paths made absolute from its ``base`` when that is not the working directory.

    A manifest written in the pipeline's working directory lists ``results/tfrecords/...``; read from a training
    script elsewhere, those paths are anchored at ``<manifest folder>/<base>``. In the working directory it was
    written in, nothing changes (same keys, same ``manifest()``).
    """
    base = document.get("base")
    if base is None:
        return document
    anchor = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(os.fspath(path))), base))
    if anchor == os.path.normpath(os.getcwd()):
        return document

    def fix(value):
        return value if value is None or os.path.isabs(value) else os.path.normpath(os.path.join(anchor, value))

    document = dict(document)
    document["tfrecords"] = {fix(k): v for k, v in document["tfrecords"].items()}
    document["sources"] = {n: {k: fix(v) for k, v in folders.items()} for n, folders in document["sources"].items()}
    if document.get("annotations", {}).get("path"):
        document["annotations"] = {**document["annotations"], "path": fix(document["annotations"]["path"])}
    return document


def check_manifest(document: dict, path: str | os.PathLike) -> None:
    """Raise :class:`StaleManifestError` naming every TFRecord that changed or disappeared since ``document``
    was written (one ``stat`` per TFRecord)."""
    changed, missing, lines = [], [], []
    for tfrecord, entry in document["tfrecords"].items():
        try:
            stat = os.stat(tfrecord)
        except FileNotFoundError:
            missing.append(tfrecord)
            lines.append(f"{tfrecord}: missing")
            continue
        if (stat.st_size, stat.st_mtime_ns) != (entry["size"], entry["mtime_ns"]):
            changed.append(tfrecord)
            lines.append(
                f"{tfrecord}: size {entry['size']} -> {stat.st_size}, "
                f"mtime_ns {entry['mtime_ns']} -> {stat.st_mtime_ns}"
            )
    if not lines:
        return
    path = os.fspath(path)
    shown = listing(lines, SHOWN, sep="\n  ")
    relative = any(not os.path.isabs(p) for p in missing)
    hint = f" (relative paths are read from the working directory, {os.getcwd()})" if relative else ""
    raise StaleManifestError(
        path,
        changed,
        missing,
        f"{path}: {len(changed)} TFRecord(s) changed and {len(missing)} disappeared after this manifest counted "
        f"their tiles{hint}:\n  {shown}\nThe tile counts are out of date: re-run the rule that writes this "
        "manifest (e.g. `snakemake --forcerun <rule>`, or Dataset(...).to_manifest(path)).",
    )


def read_state(path: str | os.PathLike, *, check: bool = True) -> DatasetState:
    """The Dataset state a manifest describes (see :meth:`Dataset.from_manifest`), without scanning folders or
    reading indexes. ``check``: stat every TFRecord first (:func:`check_manifest`). The recorded clipped counts and
    weights must follow from the recorded filters, clip and balance."""
    path = os.fspath(path)
    doc = rebase(read_manifest(path), path)
    try:
        if check:
            check_manifest(doc, path)
        sources = parse_sources(doc["sources"], path)
        label = doc["label"]
        ann_doc = doc["annotations"]
        annotations = (
            annotations_from_rows(doc["slides"], ann_doc["path"], ann_doc["sha256"])
            if ann_doc["sha256"] is not None
            else None
        )
        folders = {}
        for source in sources.values():
            folder = source.tfrecord_dir(label)
            if folder is not None:
                folders.setdefault(os.path.normpath(folder), source.name)
        rows = [
            (
                tfrecord,
                entry["slide"],
                folders.get(os.path.normpath(os.path.dirname(tfrecord)), ""),
                int(entry["total"]),
                int(entry["size"]),
                int(entry["mtime_ns"]),
            )
            for tfrecord, entry in doc["tfrecords"].items()
        ]
        unmatched = doc["unmatched"]
        loaded = LoadedData(
            config=None,
            sources=tuple(sources.values()),
            tile_px=doc["tile_px"],
            tile_um=doc["tile_um"],
            label=label,
            annotations=annotations,
            catalog=Catalog(make_frame(rows)),
            origin=path,
            recorded_unmatched=(
                tuple(unmatched["slides_without_tfrecord"]),
                tuple(unmatched["tfrecords_without_annotation"]),
            ),
        )
        state = DatasetState(loaded, SelectionSpec.from_json(doc))
        table = state.selection.table
    except (KeyError, TypeError, AttributeError) as exc:
        raise DatasetError(
            f"{path}: malformed manifest ({type(exc).__name__}: {exc}); re-run the rule that writes it"
        ) from None
    recorded = doc["tfrecords"]
    if len(table) != len(recorded) or any(
        (recorded.get(p, {}).get("clipped"), recorded.get(p, {}).get("weight")) != (c, w)
        for p, c, w in zip(table["path"], table["clipped"].tolist(), table["weight"].tolist())
    ):
        raise DatasetError(
            f"{path}: the recorded clipped counts or weights do not follow from the recorded filters, clip and "
            "balance (was the file edited?); re-run the rule that writes it"
        )
    return state
