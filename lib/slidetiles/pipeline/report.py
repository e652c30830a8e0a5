"""The workflow's HTML report: one self-contained page (plots embedded), readable without Snakemake."""

from __future__ import annotations

import base64
import glob
import html
import io
import json
import os

import pandas as pd


def _png_data_uri(path: str) -> str:
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode("ascii")


def _tiles_per_slide_png(manifest: dict, title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted((info["slide"], info["total"], info["clipped"]) for info in manifest["tfrecords"].values())
    fig, ax = plt.subplots(figsize=(max(6, 0.22 * len(rows)), 3.2), dpi=100)
    names = [r[0] for r in rows]
    ax.bar(names, [r[1] for r in rows], color="#c7d7ea", label="total")
    ax.bar(names, [r[2] for r in rows], color="#3b6ea5", label="used (clipped)")
    ax.set_ylabel("tiles")
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=90, labelsize=7)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


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


def render_report(*, manifests: list[str], summaries: list[str], splits: list[str], plots: list[str]) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>slidetiles report</title><style>",
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:12px}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px}img{max-width:100%}",
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
