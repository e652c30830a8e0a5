"""Reproducible, patient-level training/validation splits in Slideflow's ``splits.json`` format.

>>> from slidetiles.splits import plan_split
>>> plan = plan_split(annotations, labels="subtype", strategy="k-fold", k_fold=5, splits="splits.json", seed=0)
... # doctest: +SKIP
>>> train_slides, val_slides = plan.train_val(1)  # doctest: +SKIP

Modules: :mod:`~slidetiles.splits.cohort` (slides to patients), :mod:`~slidetiles.splits.strategies` (the
partitioners), :mod:`~slidetiles.splits.splits_file` (``splits.json``), :mod:`~slidetiles.splits.spec` (the plan's
names, defaults and checks), :mod:`~slidetiles.splits.plan` (the entry point), :mod:`~slidetiles.splits.plots` (composition figures), ``preserved_site`` (the preserved-site solver).
"""

from slidetiles.splits.cohort import SplitWarning, patient_table
from slidetiles.splits.plan import STRATEGIES, SplitPlan, plan_split
from slidetiles.splits.spec import SplitSpec
from slidetiles.splits.plots import plot_split_composition
from slidetiles.splits.preserved_site import (
    PreservedSiteSolution,
    PreservedSiteSplitter,
    lower_bound,
    solve_preserved_site,
)
from slidetiles.splits.splits_file import (
    append_split,
    entry_validation_patients,
    find_matching,
    load_splits,
    split_fingerprint,
)
from slidetiles.splits.strategies import (
    bootstrap_partition,
    fixed_partition,
    kfold_partition,
    manual_partition,
    preserved_site_partition,
)

__all__ = [
    "PreservedSiteSolution",
    "PreservedSiteSplitter",
    "STRATEGIES",
    "SplitPlan",
    "SplitSpec",
    "SplitWarning",
    "append_split",
    "bootstrap_partition",
    "entry_validation_patients",
    "find_matching",
    "fixed_partition",
    "kfold_partition",
    "load_splits",
    "lower_bound",
    "manual_partition",
    "patient_table",
    "plan_split",
    "plot_split_composition",
    "preserved_site_partition",
    "solve_preserved_site",
    "split_fingerprint",
]
