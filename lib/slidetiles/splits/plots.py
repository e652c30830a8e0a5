"""A figure of a split's composition for the pipeline's report: who went where, per label, fold and site."""

from __future__ import annotations

import os

import numpy as np

from slidetiles.errors import SplitError
from slidetiles.io.writer import atomic_write

_FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
# No dates and no matplotlib version in the file, so the same split always gives the same bytes.
_METADATA = {
    "png": {"Software": "slidetiles"},
    "svg": {"Date": None, "Creator": "slidetiles"},
    "pdf": {"CreationDate": None, "ModDate": None, "Creator": "slidetiles", "Producer": "slidetiles"},
}


def _colors(n: int) -> list:
    from matplotlib import colormaps  # heavy (~0.4 s): imported only when a plot is drawn

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _stacked(ax, names: list[str], table, columns: list[str], colors: list, title: str) -> None:
    x = np.arange(len(names))
    bottom = np.zeros(len(names))
    for column, color in zip(columns, colors):
        values = table[column].to_numpy(dtype=float)
        bars = ax.bar(x, values, bottom=bottom, color=color, label=column, edgecolor="white", linewidth=0.5)
        for bar, value, base in zip(bars, values, bottom):
            # One segment per bar says nothing the total above it does not.
            if value > 0 and len(columns) > 1:
                ax.text(bar.get_x() + bar.get_width() / 2, base + value / 2, f"{int(value)}", ha="center",
                        va="center", fontsize=7, color="white")
        bottom += values
    for xi, total in zip(x, bottom):
        ax.text(xi, total, f"{int(total)}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, names, rotation=0 if len(names) <= 8 else 45, ha="center" if len(names) <= 8 else "right")
    ax.set_ylabel("patients")
    ax.set_title(title, fontsize=10)
    ax.set_ylim(0, max(1.0, float(bottom.max()) if len(bottom) else 1.0) * 1.15)
    ax.spines[["top", "right"]].set_visible(False)
    if len(columns) > 1 or columns != ["patients"]:
        ax.legend(title="label", fontsize=7, title_fontsize=8, frameon=False, loc="upper left",
                  bbox_to_anchor=(1.0, 1.0))


def _groups(plan):
    """Rows of the composition to draw, with their bar names and the panel title."""
    comp = plan.composition()
    folds = plan.strategy.startswith("k-fold")
    if plan.strategy == "none":
        rows = comp[comp.side == "training"]
        return rows, ["all (training)"], "no validation: every patient trains"
    if folds:
        rows = comp[comp.side == "validation"]
        return rows, [f"fold {i}" for i in rows.iteration], "validation patients per fold (training = other folds)"
    if plan.k == 1:
        return comp, list(comp.side), "patients per side"
    rows = comp[comp.side == "validation"]
    return rows, [f"repeat {i}" for i in rows.iteration], "validation patients per bootstrap repeat"


def plot_split_composition(plan, path: str | os.PathLike, *, title: str | None = None) -> str:
    """Save a bar chart of a :class:`~slidetiles.splits.plan.SplitPlan`'s composition as PNG, SVG or PDF.

    Bars count patients per label for each fold (k-fold strategies), side (``fixed``) or repeat (``bootstrap``).
    Preserved-site splits get a second panel: patients per site, coloured by fold, so a reader sees at a glance that
    no site is in two folds. The format follows the extension; the bytes depend only on the plan (no dates, fixed
    SVG ids).

    Returns:
        The path written.

    Example:
        >>> plot_split_composition(plan, "report/split.svg")  # doctest: +SKIP
        'report/split.svg'
    """
    # matplotlib is heavy (~0.4 s): imported only when a plot is drawn, not with slidetiles.splits.
    from matplotlib import rc_context
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in _FORMATS:
        raise SplitError(f"{path}: plot format must be one of {', '.join(_FORMATS)} (by file extension)")
    fmt = _FORMATS[ext]

    rows, names, panel_title = _groups(plan)
    columns = [c for c in rows.columns if c not in ("iteration", "side")]
    site_panel = plan.strategy == "k-fold-preserved-site" and plan.sites
    n_sites = len(plan.sites) if site_panel else 0
    width = min(30.0, max(6.0, 1.0 * len(names) + 3.0, 0.28 * n_sites + 3.0))

    with rc_context({"svg.hashsalt": "slidetiles", "svg.fonttype": "path", "font.size": 9}):
        figure = Figure(figsize=(width, 7.0 if site_panel else 4.2), layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.subplots(2 if site_panel else 1, 1, squeeze=False)[:, 0]
        _stacked(axes[0], names, rows, columns, _colors(len(columns)), panel_title)
        if plan.model_type == "linear" and plan.patients["label"].notna().all() and plan.strategy != "none":
            _annotate_means(axes[0], plan, rows)
        if site_panel:
            _site_panel(axes[1], plan)
        heading = title or _heading(plan)
        figure.suptitle(heading, fontsize=11)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with atomic_write(path) as f:
            figure.savefig(f, format=fmt, metadata=_METADATA[fmt], dpi=120, bbox_inches="tight", pad_inches=0.15)
    return path


def _heading(plan) -> str:
    parts = [f"{plan.strategy} split" + (" (linear)" if plan.model_type == "linear" else ""),
             f"{len(plan.patients)} patients", f"{len(plan.slides)} slides"]
    if plan.strategy.startswith("k-fold"):
        parts.append(f"k={plan.k}")
    elif plan.strategy == "bootstrap":
        parts.append(f"{plan.k} repeats")
    if plan.fraction is not None:
        parts.append(f"fraction={plan.fraction:g}")
    parts.append(f"seed={plan.seed}")
    if plan.reused:
        parts.append(f"reused from splits.json #{plan.index}")
    return ", ".join(parts)


def _annotate_means(ax, plan, rows) -> None:
    label_of = plan.patients["label"].to_dict()
    everyone = set(label_of)
    for x, (iteration, side) in enumerate(zip(rows.iteration, rows.side)):
        validation = set(plan.validation_patients[iteration - 1])
        members = validation if side == "validation" else everyone - validation
        if members:
            mean = float(np.mean([label_of[p] for p in sorted(members)]))
            ax.text(x, 0, f"mean {mean:.3g}", ha="center", va="bottom", fontsize=7, color="white")


def _site_panel(ax, plan) -> None:
    site_of = plan.patients["site"].to_dict()
    counts: dict[str, int] = {}
    for p in site_of:
        counts[str(site_of[p])] = counts.get(str(site_of[p]), 0) + 1
    order = sorted(plan.sites, key=lambda s: (plan.sites[s], s))
    colors = _colors(plan.k)
    x = np.arange(len(order))
    ax.bar(x, [counts.get(s, 0) for s in order], color=[colors[plan.sites[s] - 1] for s in order])
    for fold in range(1, plan.k + 1):
        ax.bar([np.nan], [0], color=colors[fold - 1], label=f"fold {fold}")
    ax.set_xticks(x, order, rotation=90 if len(order) > 8 else 0, fontsize=7 if len(order) > 20 else 8)
    ax.set_ylabel("patients")
    ax.set_title("patients per site (each site wholly in one fold)", fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
