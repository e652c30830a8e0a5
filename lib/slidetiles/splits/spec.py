"""One split plan, one set of names: :class:`SplitSpec`, used by the config, ``Dataset.split`` and :func:`plan_split`.

The names are Slideflow's where Slideflow has one (``strategy``, ``k_fold``, ``k_fold_header``, ``fraction`` as in
its validation settings, ``site_labels`` as in ``Dataset.split``); the defaults and the checks live here and
nowhere else, so the config schema, the pipeline step and the Dataset methods cannot drift apart.

>>> SplitSpec.from_config({"strategy": "k-fold", "labels": "subtype"}).k_fold
3
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

import numpy as np

from slidetiles.errors import SplitError

log = logging.getLogger(__name__)

#: Every strategy :func:`~slidetiles.splits.plan_split` knows, Slideflow's names.
STRATEGIES = ("k-fold", "k-fold-preserved-site", "k-fold-manual", "fixed", "bootstrap", "none")

#: Model types, Slideflow 2's names.
MODEL_TYPES = ("categorical", "linear")
#: Slideflow 3's names for the model types, accepted wherever a model type is.
MODEL_TYPE_ALIASES = {"classification": "categorical", "regression": "linear"}

#: Config keys of earlier releases and the name that replaced each.
DEPRECATED_KEYS = {"k": "k_fold", "site_column": "site_labels"}

#: Config keys a split plan may carry that are not part of the spec (the pipeline reads them).
PIPELINE_KEYS = ("dataset",)


def check_seed(seed, *, error: type[Exception] = SplitError, none_ok: bool = False):
    """``seed`` as a Python int (or None when ``none_ok``), else ``error``.

    The one seed check of the library: splits, the preserved-site solver and the loaders all take a seed, and all
    need it to be an explicit non-negative int to be reproducible (``True`` and ``1.0`` are refused, not coerced).

    Example:
        >>> check_seed(np.int64(7)), check_seed(None, none_ok=True)
        (7, None)
        >>> check_seed(-1)
        Traceback (most recent call last):
        ...
        slidetiles.errors.SplitError: seed must be a non-negative integer, not -1
    """
    if seed is None and none_ok:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        what = "None or a non-negative integer" if none_ok else "a non-negative integer"
        raise error(f"seed must be {what}, not {seed!r}")
    return int(seed)


def check_fraction(fraction, name: str = "fraction") -> float:
    """``fraction`` as a float strictly between 0 and 1, or SplitError naming ``name``."""
    if fraction is None:
        raise SplitError(f"this strategy needs {name}=... (the share of patients held out for validation, 0 to 1)")
    if isinstance(fraction, (bool, np.bool_)):
        raise SplitError(f"{name} must be a number between 0 and 1, not {fraction!r}")
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        raise SplitError(f"{name} must be a number between 0 and 1, not {fraction!r}") from None
    if not 0.0 < value < 1.0:
        raise SplitError(f"{name} must be strictly between 0 and 1, got {fraction}")
    return value


def check_k_fold(k_fold, minimum: int, name: str = "k_fold") -> int:
    """``k_fold`` as an int of at least ``minimum`` (2 folds, or 1 bootstrap repeat), or SplitError naming ``name``."""
    if isinstance(k_fold, (bool, np.bool_)) or not isinstance(k_fold, (int, np.integer)):
        raise SplitError(f"{name} must be an integer, not {k_fold!r}")
    if k_fold < minimum:
        what = "repeat" if minimum == 1 else "folds"
        raise SplitError(f"{name} must be at least {minimum} ({what}), got {k_fold}")
    return int(k_fold)


def canonical_model_type(model_type) -> str:
    """``'categorical'`` or ``'linear'``, accepting Slideflow 3's ``'classification'`` and ``'regression'``.

    >>> canonical_model_type("regression")
    'linear'
    """
    if isinstance(model_type, str):
        model_type = MODEL_TYPE_ALIASES.get(model_type, model_type)
    check_model_type(model_type)
    return model_type


def check_model_type(model_type: str) -> None:
    """Raise :class:`SplitError` unless ``model_type`` is ``'categorical'`` or ``'linear'`` (no aliases)."""
    if model_type not in MODEL_TYPES:
        raise SplitError(f"unknown model_type {model_type!r}: use 'categorical' (Slideflow 3: 'classification') or "
                         f"'linear' ('regression')")


@dataclass(frozen=True)
class SplitSpec:
    """What to split and how: every input of :func:`~slidetiles.splits.plan_split` but the data and the file.

    Building one checks it (``SplitError`` naming the key); fields a strategy does not read are kept as given,
    except ``fraction``, which only ``fixed`` and ``bootstrap`` read and which is None otherwise.

    Attributes:
        strategy: one of :data:`STRATEGIES` (default ``'k-fold'``).
        model_type: ``'categorical'`` (default) or ``'linear'``; Slideflow 3's ``'classification'`` and
            ``'regression'`` are accepted and stored as those two.
        labels: outcome column, list of columns or ``{slide: label}``; None (default) splits without labels.
        k_fold: folds for ``k-fold``/``k-fold-preserved-site`` (at least 2), repeats for ``bootstrap`` (at least 1);
            default 3. ``k-fold-manual`` takes its folds from ``k_fold_header``.
        fraction: validation share for ``fixed`` and ``bootstrap`` (required there, strictly between 0 and 1).
        k_fold_header: the fold column of ``k-fold-manual`` (required there).
        site_labels: the site column of ``k-fold-preserved-site`` (default ``'site'``).
        seed: non-negative int (default 0).
        time_limit: seconds the preserved-site solver may search (default 10; None: no limit).

    Example:
        >>> SplitSpec(strategy="fixed", fraction=0.2).fraction
        0.2
        >>> SplitSpec(strategy="fixed")
        Traceback (most recent call last):
        ...
        slidetiles.errors.SplitError: this strategy needs fraction=... (the share of patients held out for validation, 0 to 1)
    """

    strategy: str = "k-fold"
    model_type: str = "categorical"
    labels: object = None
    k_fold: int = 3
    fraction: float | None = None
    k_fold_header: str | None = None
    site_labels: str | None = "site"
    seed: int = 0
    time_limit: float | None = 10.0

    def __post_init__(self):
        strategy = self.strategy
        if not isinstance(strategy, str) or strategy not in STRATEGIES:
            raise SplitError(f"unknown split strategy {strategy!r}; valid strategies: {', '.join(STRATEGIES)}")
        set_ = object.__setattr__  # frozen: normalise in place once, here
        set_(self, "model_type", canonical_model_type(self.model_type))
        set_(self, "seed", check_seed(self.seed))
        if strategy in ("fixed", "bootstrap"):
            set_(self, "fraction", check_fraction(self.fraction))
        else:
            set_(self, "fraction", None)
        if strategy == "bootstrap":
            set_(self, "k_fold", check_k_fold(self.k_fold, 1))
        elif strategy in ("k-fold", "k-fold-preserved-site"):
            set_(self, "k_fold", check_k_fold(self.k_fold, 2))
        if strategy == "k-fold-manual" and self.k_fold_header is None:
            raise SplitError("strategy 'k-fold-manual' needs k_fold_header=... (the column naming each slide's fold)")
        if strategy == "k-fold-preserved-site" and self.site_labels is None:
            raise SplitError("strategy 'k-fold-preserved-site' needs site_labels=... (the column naming each "
                             "slide's site)")
        limit = self.time_limit
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float, np.number))
                                  or not limit > 0):
            raise SplitError(f"time_limit must be a positive number of seconds or None, not {limit!r}")

    @classmethod
    def from_config(cls, plan: Mapping, where: str = "split", *, warn: bool = True) -> SplitSpec:
        """The spec of one config plan (``splits.<name>`` in config.yaml), old key names included.

        ``k`` and ``site_column`` (earlier releases) still work: each logs a warning and raises a
        ``DeprecationWarning`` naming its replacement. Giving both names with different values is an error, as is a
        key the spec does not know. Errors start with ``where``. ``warn=False`` skips the deprecation messages, for
        callers that read a plan already checked (and warned about) once.

        Example:
            >>> SplitSpec.from_config({"dataset": "all", "k_fold": 5, "seed": 1}).k_fold
            5
        """
        known = {f.name for f in fields(cls)}
        values = {}
        for key, value in plan.items():
            if key in PIPELINE_KEYS:
                continue
            new = DEPRECATED_KEYS.get(key)
            if new is not None:
                message = f"{where}.{key} is deprecated; call it {where}.{new} (Slideflow's name)"
                if warn:
                    log.warning(message)
                    warnings.warn(message, DeprecationWarning, stacklevel=2)
                if new in plan and plan[new] != value:
                    raise SplitError(f"{where}.{key}={value!r} and {where}.{new}={plan[new]!r} disagree; {key} is the "
                                     f"old name of {new}, keep only {new}")
                values.setdefault(new, value)
            elif key in known:
                values[key] = value
            else:
                raise SplitError(f"{where}.{key}: unknown split setting; valid ones: {', '.join(sorted(known))}")
        try:
            return cls(**values)
        except SplitError as e:
            raise SplitError(f"{where}: {e}") from None

    def to_config(self) -> dict:
        """The spec as config keys (new names, every default filled), e.g. for Snakemake params.

        Example:
            >>> SplitSpec().to_config()["k_fold"]
            3
        """
        return asdict(self)


def config_params(plan: Mapping) -> dict:
    """A config plan as the split rule's params: new key names, every default filled, keys sorted.

    The spec, not the raw config, goes into params: a plan renamed from the old keys (``k``, ``site_column``) to
    the new ones, or one that now spells out a default, is the same plan, and Snakemake re-runs nothing. No
    deprecation messages here: ``check_config`` gave them once per run.

    Example:
        >>> config_params({"dataset": "all", "k": 5})["k_fold"]
        5
    """
    spec = SplitSpec.from_config(plan, warn=False)
    values = {**{key: plan[key] for key in PIPELINE_KEYS if key in plan}, **spec.to_config()}
    return {key: values[key] for key in sorted(values)}
