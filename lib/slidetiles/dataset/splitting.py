"""``Dataset.split`` and ``Dataset.kfold_split``: patient-level splits of a Dataset into two Datasets.

The planning itself (strategies, splits.json, preserved-site folds) lives in :mod:`slidetiles.splits`; this module
only hands it the Dataset's annotations and turns slide lists back into Datasets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from slidetiles.errors import DatasetError, SplitError
from slidetiles.splits import SplitPlan, plan_split
from slidetiles.splits.cohort import canonical_model_type
from slidetiles.splits.spec import SplitSpec


def _annotations(dataset):
    table = dataset.annotations
    if table is None:
        raise DatasetError("split(): no annotations loaded; a split needs 'patient' and 'slide' columns")
    return table


def _keep(dataset, slides: list[str]):
    """The Dataset restricted to ``slides`` (an empty list gives an empty Dataset)."""
    return dataset.filter(filters={"slide": sorted(slides)})


def _either(name: str, ours, theirs_name: str, theirs):
    """One argument given under our name or Slideflow 3's (never both, unless equal); None when neither."""
    if ours is not None and theirs is not None and ours != theirs:
        raise SplitError(f"split(): {name}={ours!r} and {theirs_name}={theirs!r} disagree; {theirs_name} is "
                         f"Slideflow 3's name for {name}, pass one of them")
    return ours if ours is not None else theirs


def _spec(**fields):
    """The split spec of these arguments.

    ``strategy`` and ``k_fold`` left as None (neither our name nor Slideflow 3's given) take the spec's default, the
    one place defaults live; for the other fields None is a value (no labels, no time limit) and is passed on.
    """
    return SplitSpec(**{name: value for name, value in fields.items()
                        if value is not None or name not in ("strategy", "k_fold")})


def split_categories(dataset, labels, model_type: str):
    """The categories Slideflow numbers a column label over (None for linear, mapping or no labels)."""
    if labels is None or isinstance(labels, Mapping) or canonical_model_type(model_type) != "categorical":
        return None
    if isinstance(labels, str) or (isinstance(labels, (list, tuple)) and all(isinstance(c, str) for c in labels)):
        missing = [c for c in ([labels] if isinstance(labels, str) else labels) if c not in dataset.annotations]
        if missing:
            return None  # plan_split names the missing column with the columns there are
        return dataset.label_categories(labels)
    return None


def plan_dataset_split(
    dataset, spec: SplitSpec, *, splits: str | os.PathLike | None = None, read_only: bool = False
) -> SplitPlan:
    """The plan ``spec`` gives over ``dataset``'s annotations (see :func:`~slidetiles.splits.plan_split`), numbering
    categories as Slideflow does: over every annotated slide passing the filters, TFRecord or not."""
    return plan_split(
        _annotations(dataset),
        spec,
        splits=splits,
        categories=split_categories(dataset, spec.labels, spec.model_type),
        read_only=read_only,
    )


def split_dataset(
    dataset,
    model_type: str | None,
    labels,
    strategy: str | None,
    fraction: float | None,
    k_fold: int | None,
    k_fold_iter: int | None,
    k_fold_header: str | None,
    site_labels: str | None,
    splits: str | os.PathLike | None,
    seed: int,
    time_limit: float | None,
    *,
    val_strategy: str | None = None,
    val_fraction: float | None = None,
    val_k_fold: int | None = None,
    read_only: bool = False,
    from_wsi: bool = False,
):
    """``(train, val)`` Datasets of one iteration of a split; see :meth:`slidetiles.Dataset.split`, which gives every
    argument (its signature holds the defaults, :class:`~slidetiles.splits.spec.SplitSpec`'s)."""
    if from_wsi:
        raise SplitError("split(from_wsi=True): slidetiles splits the slides of its TFRecords; drop from_wsi")
    if model_type is None:
        # Slideflow's default: classification with labels, else a split of the patients alone.
        model_type = "categorical" if labels is not None else "linear"
    spec = _spec(
        model_type=model_type,
        labels=labels,
        strategy=_either("strategy", strategy, "val_strategy", val_strategy),
        fraction=_either("fraction", fraction, "val_fraction", val_fraction),
        k_fold=_either("k_fold", k_fold, "val_k_fold", val_k_fold),
        k_fold_header=k_fold_header,
        site_labels=site_labels,
        seed=seed,
        time_limit=time_limit,
    )
    plan = plan_dataset_split(dataset, spec, splits=splits, read_only=read_only)
    if k_fold_iter is None and plan.k > 1:
        raise SplitError(
            f"strategy {spec.strategy!r} has {plan.k} iterations: pass k_fold_iter=1..{plan.k} (1-based), or use "
            "kfold_split() to get them all"
        )
    train, val = plan.train_val(k_fold_iter)
    return _keep(dataset, train), _keep(dataset, val)


def kfold_split_dataset(
    dataset,
    k: int,
    labels,
    preserved_site: bool,
    splits: str | os.PathLike | None,
    seed: int,
    *,
    # Dataset.kfold_split passes these only when given: the defaults are SplitSpec's (see Dataset.split).
    model_type: str = SplitSpec.model_type,
    site_labels: str | None = SplitSpec.site_labels,
    time_limit: float | None = SplitSpec.time_limit,
    read_only: bool = False,
) -> tuple:
    """``(train, val)`` for every fold of one k-fold partition; see :meth:`slidetiles.Dataset.kfold_split`."""
    spec = _spec(
        model_type=model_type,
        labels=labels,
        strategy="k-fold-preserved-site" if preserved_site else "k-fold",
        k_fold=k,
        site_labels=site_labels,
        seed=seed,
        time_limit=time_limit,
    )
    plan = plan_dataset_split(dataset, spec, splits=splits, read_only=read_only)
    return tuple((_keep(dataset, train), _keep(dataset, val)) for train, val in plan.iter_train_val())
