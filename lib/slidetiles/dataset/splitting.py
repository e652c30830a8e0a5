"""``Dataset.split`` and ``Dataset.kfold_split``: patient-level splits of a Dataset into two Datasets.

The planning itself (strategies, splits.json, preserved-site folds) lives in :mod:`slidetiles.splits`; this module
only hands it the Dataset's annotations and turns slide lists back into Datasets.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from slidetiles.errors import DatasetError, SplitError


def _annotations(dataset):
    table = dataset.annotations
    if table is None:
        raise DatasetError("split(): no annotations loaded; a split needs 'patient' and 'slide' columns")
    return table


def _keep(dataset, slides: list[str]):
    """The Dataset restricted to ``slides`` (an empty list gives an empty Dataset)."""
    return dataset.filter(filters={"slide": sorted(slides)})


def split_dataset(
    dataset,
    model_type: str = "categorical",
    labels=None,
    strategy: str = "k-fold",
    fraction: float | None = None,
    k_fold: int = 3,
    k_fold_iter: int | None = None,
    k_fold_header: str | None = None,
    site_labels: str | None = "site",
    splits: str | os.PathLike | None = None,
    seed: int = 0,
    time_limit: float = 10.0,
):
    """``(train, val)`` Datasets of one iteration of a split; see :meth:`slidetiles.Dataset.split`."""
    from slidetiles.splits import plan_split

    plan = plan_split(
        _annotations(dataset),
        model_type=model_type,
        labels=labels,
        strategy=strategy,
        fraction=fraction,
        k_fold=k_fold,
        k_fold_header=k_fold_header,
        site_labels=site_labels,
        splits=splits,
        seed=seed,
        time_limit=time_limit,
    )
    if k_fold_iter is None and plan.k > 1:
        raise SplitError(
            f"strategy {strategy!r} has {plan.k} iterations: pass k_fold_iter=1..{plan.k} (1-based), or use "
            "kfold_split() to get them all"
        )
    train, val = plan.train_val(k_fold_iter)
    return _keep(dataset, train), _keep(dataset, val)


def kfold_split_dataset(
    dataset,
    k: int = 3,
    labels=None,
    preserved_site: bool = False,
    splits: str | os.PathLike | None = None,
    seed: int = 0,
    *,
    model_type: str = "categorical",
    site_labels: str = "site",
    time_limit: float = 10.0,
) -> Iterator:
    """Yield ``(train, val)`` for every fold of one k-fold partition; see :meth:`slidetiles.Dataset.kfold_split`."""
    from slidetiles.splits import plan_split

    plan = plan_split(
        _annotations(dataset),
        model_type=model_type,
        labels=labels,
        strategy="k-fold-preserved-site" if preserved_site else "k-fold",
        k_fold=k,
        site_labels=site_labels,
        splits=splits,
        seed=seed,
        time_limit=time_limit,
    )
    for train, val in plan.iter_train_val():
        yield _keep(dataset, train), _keep(dataset, val)
