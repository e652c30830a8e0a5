"""The workflow's HTML report: one page, readable without Snakemake, light at cohort scale.

Charts are embedded (a few per dataset, whatever the number of slides): distributions of tiles per slide, not a
bar per slide. Slide sources add a table of tiles per slide, kept and removed by reason, with a link to each
slide's thumbnail (the ``extract`` rule's PNG, never embedded): inline only for the :data:`MAX_TABLE_ROWS` slides
that most need a look (skipped ones, then the fewest kept tiles), the whole table in a linked TSV.

Example:
    >>> table = extraction_table(["results/extraction/S/s1.json"])  # doctest: +SKIP
    >>> page = render_report(manifests=[], summaries=[], splits=[], plots=[], extraction=table)  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import glob
import html
import io
import json
import os
import urllib.parse

import numpy as np
import pandas as pd

from slidetiles.io.writer import atomic_write

#: Rows of the tiles-per-slide table shown on the page; the rest are in the linked TSV only.
MAX_TABLE_ROWS = 200
#: Removal reasons in the order the filters apply (ROI, QC, background, max_tiles); others follow, sorted.
REASONS = ("roi", "qc", "whitespace", "grayspace", "max_tiles")


def _png_data_uri(path: str) -> str:
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode("ascii")


def _pyplot():
    # matplotlib is heavy (~0.4 s): only the report job imports it, and must pick the Agg backend first.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figure_uri(fig) -> str:
    """The figure as an embedded PNG (no metadata: the same data give the same page)."""
    plt = _pyplot()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _bins(values) -> np.ndarray | int:
    """Integer-aligned bins for counts: one per value when few, about 40 over the range when many."""
    values = np.asarray(values)
    if not len(values):
        return 10
    low, high = int(values.min()), int(values.max())
    step = max(1, int(np.ceil((high - low + 1) / 40)))
    return np.arange(low, high + step + 1, step) - 0.5


def _tiles_per_slide_png(manifest: dict, title: str) -> str:
    """Histogram of tiles per slide (total, and used after clipping): its size does not grow with the slides."""
    plt = _pyplot()
    infos = list(manifest["tfrecords"].values())
    total = np.array([info["total"] for info in infos], np.int64)
    clipped = np.array([info["clipped"] for info in infos], np.int64)
    fig, ax = plt.subplots(figsize=(7, 3), dpi=100)
    bins = _bins(np.concatenate([total, clipped]))
    ax.hist(total, bins=bins, color="#c7d7ea", label="total")
    ax.hist(clipped, bins=bins, histtype="step", linewidth=1.5, color="#3b6ea5", label="used (clipped)")
    ax.set_xlabel("tiles per slide")
    ax.set_ylabel("slides")
    if len(total):
        title += f" ({len(total)} slides; total median {np.median(total):g}, min {total.min()}, max {total.max()})"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _figure_uri(fig)


def extraction_table(reports: list[str]) -> pd.DataFrame:
    """One row per ``extract`` job's JSON report: source, slide, grid tiles, kept, kept fraction, removed by
    reason (``removed_<reason>``), why it was skipped, and its thumbnail (the PNG beside the report).

    Example:
        >>> extraction_table(["results/extraction/S/s1.json"])[["slide", "grid", "kept"]]  # doctest: +SKIP
          slide  grid  kept
        0    s1    48    30
    """
    records = []
    for path in reports:
        try:
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"{path}: cannot read this extraction report ({exc}); delete it to extract the slide again"
            ) from None
        removed = {str(k): int(v) for k, v in (record.get("removed") or {}).items()}
        kept = int(record.get("num_tiles") or 0)
        records.append({
            "source": record.get("source"),
            "slide": record.get("slide"),
            "kept": kept,
            "grid": kept + sum(removed.values()),
            **{f"removed_{k}": v for k, v in removed.items()},
            "skipped": record.get("skipped") or "",
            "thumbnail": os.path.splitext(path)[0] + ".png",
            "report": path,
            "tfrecord": record.get("tfrecord") or "",
        })
    reasons = list(REASONS) + sorted({k[8:] for r in records for k in r if k.startswith("removed_")} - set(REASONS))
    columns = ["source", "slide", "grid", "kept", "kept_fraction", *(f"removed_{r}" for r in reasons), "skipped",
               "thumbnail", "report", "tfrecord"]
    table = pd.DataFrame.from_records(records, columns=[c for c in columns if c != "kept_fraction"])
    for reason in reasons:
        table[f"removed_{reason}"] = table[f"removed_{reason}"].fillna(0).astype(np.int64)
    table["kept_fraction"] = (table["kept"] / table["grid"].where(table["grid"] > 0)).round(4)
    return table[columns].sort_values(["source", "slide"], kind="stable").reset_index(drop=True)


def write_extraction_table(table: pd.DataFrame, path: str) -> None:
    """``table`` (:func:`extraction_table`) as a tab-separated file, written atomically."""
    with atomic_write(path, "w") as f:
        table.to_csv(f, sep="\t", index=False, lineterminator="\n")


def _link(target: str, page: str) -> str:
    """``target`` as a URL relative to the folder of the page at ``page`` (both relative to the same folder)."""
    relative = os.path.relpath(target, os.path.dirname(page) or ".")
    return html.escape(urllib.parse.quote(relative.replace(os.sep, "/")), quote=True)


def _extraction_png(table: pd.DataFrame) -> str:
    """Distributions of the kept fraction and of the kept tiles per slide, stacked by source."""
    plt = _pyplot()
    done = table[table["grid"] > 0]
    sources = sorted(done["source"].astype(str).unique())
    stacked = len(sources) <= 8  # more sources than colours to tell apart: one histogram of all
    groups = [done[done["source"].astype(str) == s] for s in sources] if stacked else [done]
    labels = sources if stacked else ["all sources"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3), dpi=100)
    if len(done):
        left.hist([g["kept_fraction"] for g in groups], bins=np.linspace(0, 1, 21), stacked=True, label=labels)
        right.hist([g["kept"] for g in groups], bins=_bins(done["kept"]), stacked=True, label=labels)
        right.legend(fontsize=8)
    left.set_xlabel("kept fraction of the grid's tiles")
    right.set_xlabel("kept tiles per slide")
    for ax in (left, right):
        ax.set_ylabel("slides")
    left.set_title(f"{len(done)} slides extracted", fontsize=10)
    right.set_title(f"median {np.median(done['kept']) if len(done) else 0:g} kept tiles per slide", fontsize=10)
    return _figure_uri(fig)


def _extraction_html(table: pd.DataFrame, page: str, tiles_tsv: str | None, max_rows: int) -> str:
    reasons = [c for c in table.columns if c.startswith("removed_")]
    skipped = table["skipped"] != ""
    by_source = table.groupby("source", sort=True).agg(
        slides=("slide", "size"), skipped=("skipped", lambda s: int((s != "").sum())), grid=("grid", "sum"),
        kept=("kept", "sum"), **{r: (r, "sum") for r in reasons})
    by_source.columns = [c.replace("removed_", "removed: ") for c in by_source.columns]
    parts = [
        "<h2>Slide extraction</h2>",
        f"<p>{len(table)} slides from slide sources, {int(skipped.sum())} skipped; {int(table['kept'].sum())} tiles "
        f"kept of {int(table['grid'].sum())} on the grids. Each slide's thumbnail shows its kept tiles and the "
        "removed ones coloured by reason.</p>",
        by_source.reset_index().to_html(index=False),
        f"<img alt='kept fraction and kept tiles per slide' src='{_extraction_png(table)}'>",
    ]
    # Skipped slides first, then the fewest kept tiles (and the lowest kept fraction): those that need a look.
    order = table.assign(_skipped=~skipped, _fraction=table["kept_fraction"].fillna(-1)).sort_values(
        ["_skipped", "kept", "_fraction", "source", "slide"], kind="stable")
    shown = order.head(max_rows)
    tsv = f"<a href='{_link(tiles_tsv, page)}'>{html.escape(os.path.basename(tiles_tsv))}</a>" if tiles_tsv else None
    if len(shown) < len(table):
        where = f"; every slide in {tsv}" if tsv else ""
        parts.append(f"<p>The {len(shown)} slides of {len(table)} with the fewest kept tiles, skipped ones first"
                     f"{where}.</p>")
    elif tsv:
        parts.append(f"<p>Also as a table: {tsv}.</p>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in
                   ["slide", "source", "grid", "kept", "kept %", *(r[8:] for r in reasons), "skipped: why",
                    "thumbnail"])
    rows = []
    for row in shown.to_dict("records"):  # records, not itertuples: a reason need not be a Python name
        fraction = "" if pd.isna(row["kept_fraction"]) else f"{100 * row['kept_fraction']:.1f}"
        removed = "".join(f"<td>{row[r]}</td>" for r in reasons)
        rows.append(
            f"<tr><td>{html.escape(str(row['slide']))}</td><td>{html.escape(str(row['source']))}</td>"
            f"<td>{row['grid']}</td><td>{row['kept']}</td><td>{fraction}</td>{removed}"
            f"<td>{html.escape(row['skipped'])}</td><td><a href='{_link(row['thumbnail'], page)}'>png</a></td></tr>"
        )
    parts.append(f"<table class='slides'><tr>{head}</tr>{''.join(rows)}</table>")
    return "\n".join(parts)


def _split_table(entry: dict) -> str:
    validation = entry.get("validation") or {}
    tfrecords = entry.get("tfrecords") or {}
    rows = [(name, len(slides)) for name, slides in sorted(validation.items())] or [
        (name, len(slides)) for name, slides in sorted(tfrecords.items())
    ]
    body = "".join(f"<tr><td>{html.escape(str(n))}</td><td>{c}</td></tr>" for n, c in rows)
    return f"<table><tr><th>fold / side</th><th>validation slides</th></tr>{body}</table>"


def stage_timings(root: str = "results/benchmarks") -> pd.DataFrame:
    """Wall time per stage from the rules' ``benchmark:`` files: jobs, total and slowest seconds per rule."""
    records = []
    for path in sorted(glob.glob(os.path.join(root, "**", "*.tsv"), recursive=True)):
        stage = os.path.relpath(path, root).split(os.sep)[0].removesuffix(".tsv")
        try:
            seconds = float(pd.read_csv(path, sep="\t")["s"].iloc[0])
        except Exception:  # a benchmark file being written or from another tool: not ours to judge
            continue
        records.append((stage, seconds))
    frame = pd.DataFrame(records, columns=["stage", "s"])
    table = frame.groupby("stage", sort=False)["s"].agg(["count", "sum", "max"])
    return table.rename(columns={"count": "jobs", "sum": "total s", "max": "slowest job s"}).round(2)


def _stage_timings_html(root: str = "results/benchmarks") -> str:
    table = stage_timings(root)
    return table.to_html() if len(table) else "<p>No benchmark files yet.</p>"


def render_report(
    *,
    manifests: list[str],
    summaries: list[str],
    splits: list[str],
    plots: list[str],
    extraction: pd.DataFrame | None = None,
    page: str = "results/report.html",
    tiles_tsv: str | None = None,
    max_rows: int = MAX_TABLE_ROWS,
) -> str:
    """The page's HTML. ``extraction`` (:func:`extraction_table`; None or empty when no source has slides) adds
    the slide extraction section; links (thumbnails, ``tiles_tsv``) are relative to the page's path ``page``.

    Example:
        >>> text = render_report(manifests=["results/manifests/all.json"],
        ...                      summaries=["results/manifests/all.summary.txt"], splits=[], plots=[])  # doctest: +SKIP
    """
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>slidetiles report</title><style>",
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:12px}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px}img{max-width:100%}"
        "table.slides{font-size:12px}",
        "</style></head><body><h1>slidetiles report</h1>",
        "<h2>Datasets</h2>",
    ]
    for manifest_path, summary_path in zip(manifests, summaries):
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
        name = os.path.basename(manifest_path).removesuffix(".json")
        with open(summary_path, encoding="utf-8") as f:
            summary = f.read()
        total = sum(info["total"] for info in manifest["tfrecords"].values())
        clipped = sum(info["clipped"] for info in manifest["tfrecords"].values())
        parts.append(
            f"<h3>{html.escape(name)}</h3><p>{len(manifest['tfrecords'])} TFRecords, {total} tiles, {clipped} used "
            f"after clipping. Manifest: <code>{html.escape(manifest_path)}</code></p>"
            f"<pre>{html.escape(summary)}</pre>"
            f"<img alt='tiles per slide' src='{_tiles_per_slide_png(manifest, f'{name}: tiles per slide')}'>"
        )
    if extraction is not None and len(extraction):
        parts.append(_extraction_html(extraction, page, tiles_tsv, max_rows))
    parts.append("<h2>Splits</h2>")
    for split_path, plot_path in zip(splits, plots):
        with open(split_path, encoding="utf-8") as f:
            entries = json.load(f)
        name = os.path.basename(split_path).removesuffix(".json")
        entry = entries[-1] if entries else {}
        parts.append(
            f"<h3>{html.escape(name)}</h3><p>strategy <b>{html.escape(str(entry.get('strategy')))}</b>, seed "
            f"{html.escape(str(entry.get('seed')))}, file <code>{html.escape(split_path)}</code></p>"
            f"{_split_table(entry)}<img alt='split composition' src='{_png_data_uri(plot_path)}'>"
        )
    parts.append("<h2>Stage timings</h2>" + _stage_timings_html() + "</body></html>")
    return "\n".join(parts)
