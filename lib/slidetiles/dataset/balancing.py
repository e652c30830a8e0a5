"""How often each TFRecord is drawn from: ``Dataset.balance`` sampling weights.

Weights are per TFRecord, normalised to sum to 1, computed from the clipped tile counts of the TFRecords a
Dataset currently retains (``N`` TFRecords, ``c_i`` clipped tiles):

- ``'tile'``: ``w_i = c_i / sum(c)``: sampling mirrors drawing tiles uniformly from the whole dataset.
- ``'slide'``: ``w_i = 1 / N``: every TFRecord equally (also the weight without any balance: the loaders'
  default is uniform, as in Slideflow).
- ``'patient'``: ``w_i = 1 / (P * n_p)`` for ``P`` patients, ``n_p`` TFRecords of patient ``p``: each patient
  equally, split evenly among its slides.
- ``'category'``: ``w_i = (1 / K) * c_i / C_g`` for ``K`` categories (distinct value tuples of ``headers``) and
  ``C_g`` the clipped tiles of category ``g``: each category equally, and within a category in proportion to
  tiles, so every tile of a category is equally likely. A category whose TFRecords hold no tiles splits its
  share evenly. (Slideflow splits a category's share evenly among its slides instead.)

Each weight is one integer ratio turned into the nearest float, so weights are reproducible to the bit.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from slidetiles.errors import DatasetError

BALANCE_STRATEGIES = ("tile", "slide", "patient", "category")


@dataclass(frozen=True)
class BalanceSpec:
    """A balance as asked: strategy and, for 'category', the annotation headers."""

    strategy: str
    headers: tuple[str, ...] | None = None

    def to_json(self) -> dict:
        return {"headers": list(self.headers) if self.headers is not None else None, "strategy": self.strategy}

    @classmethod
    def from_json(cls, doc: dict | None) -> "BalanceSpec | None":
        if doc is None:
            return None
        headers = doc.get("headers")
        return cls(doc["strategy"], tuple(headers) if headers else None)

    def describe(self) -> str:
        text = f"strategy={self.strategy!r}"
        return text + (f", headers={list(self.headers)}" if self.headers else "")


def make_balance_spec(headers, strategy) -> BalanceSpec | None:
    """Validate ``balance()``'s arguments; None (strategy None or 'none') removes balancing."""
    if strategy is None or strategy == "none":
        return None
    if strategy not in BALANCE_STRATEGIES:
        raise DatasetError(f"balance(strategy={strategy!r}): choose one of {list(BALANCE_STRATEGIES)} (or None)")
    if isinstance(headers, str):
        headers = [headers]
    if strategy == "category":
        if not headers:
            raise DatasetError(
                "balance(strategy='category') needs headers=[annotation column(s)] defining the categories"
            )
        return BalanceSpec(strategy, tuple(str(h) for h in headers))
    # Slideflow accepts and ignores headers with the other strategies; so do we, rather than break old calls.
    return BalanceSpec(strategy, None)


def uniform_weights(n: int) -> list[float]:
    return [1 / n] * n if n else []


def balance_weights(
    clipped: Sequence[int], spec: BalanceSpec | None, groups: Sequence[Hashable] | None = None
) -> list[float]:
    """Weight of each TFRecord (``clipped`` tile counts in path order; ``groups`` for 'patient'/'category')."""
    n = len(clipped)
    if n == 0:
        return []
    if spec is None or spec.strategy == "slide":
        return uniform_weights(n)
    clipped = [int(c) for c in clipped]
    if spec.strategy == "tile":
        whole = sum(clipped)
        if whole == 0:
            raise DatasetError("balance(strategy='tile'): the retained TFRecords hold no tiles to weight by")
        return [c / whole for c in clipped]
    if groups is None or len(groups) != n:
        raise ValueError("balance by patient or category needs one group key per TFRecord")
    members: dict[Hashable, list[int]] = {}
    for i, key in enumerate(groups):
        members.setdefault(key, []).append(i)
    k = len(members)
    weights = [0.0] * n
    for idx in members.values():
        if spec.strategy == "patient":
            for i in idx:
                weights[i] = 1 / (k * len(idx))
            continue
        group_tiles = sum(clipped[i] for i in idx)
        for i in idx:
            weights[i] = clipped[i] / (k * group_tiles) if group_tiles else 1 / (k * len(idx))
    return weights
