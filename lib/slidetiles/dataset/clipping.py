"""How many tiles each TFRecord contributes: ``Dataset.clip``.

Semantics, applied to the TFRecords a Dataset currently retains (so a clip stays right after later filtering):

1. ``max_tiles`` (> 0) caps every TFRecord: ``cap = min(total, max_tiles)``; 0 means no cap (``cap = total``).
2. ``strategy`` then undersamples every group to the smallest group's tile count, as Slideflow's ``clip`` means
   it: with ``'slide'`` each TFRecord is a group, so every TFRecord keeps ``min(cap)`` tiles; with ``'patient'``
   (the patient's TFRecords) or ``'category'`` (TFRecords whose slides share the values of ``headers``) every
   group keeps ``B = min over groups of sum(cap)`` tiles in all.
3. A group's budget ``B`` is spread over its TFRecords in proportion to their caps, rounded by largest remainder:
   TFRecord ``i`` gets ``floor(B * cap_i / C)`` (``C`` = the group's summed caps), then the ``B - sum`` tiles left
   go one each to the TFRecords with the largest remainders ``B * cap_i mod C``, ties to the earlier path in
   sort order. Integer arithmetic only, so the result is exact and reproducible, every group sums to exactly
   ``B``, and no TFRecord gets more than its cap.

Slideflow differs in two places: for ``'patient'`` it clips each TFRecord (not each patient) to the smallest
patient's total, so a patient with several slides keeps more than the smallest patient; for ``'category'`` it
floors ``total * fraction`` per TFRecord (the group then keeps slightly less than the smallest category) and
ignores ``max_tiles``.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from slidetiles.errors import DatasetError

CLIP_STRATEGIES = (None, "slide", "patient", "category")


@dataclass(frozen=True)
class ClipSpec:
    """A clip as asked: per-TFRecord cap (0 = none), group strategy, category headers."""

    max_tiles: int = 0
    strategy: str | None = None
    headers: tuple[str, ...] | None = None

    def to_json(self) -> dict:
        return {
            "max_tiles": self.max_tiles,
            "strategy": self.strategy,
            "headers": list(self.headers) if self.headers is not None else None,
        }

    @classmethod
    def from_json(cls, doc: dict | None) -> "ClipSpec | None":
        if doc is None:
            return None
        headers = doc.get("headers")
        return cls(int(doc.get("max_tiles") or 0), doc.get("strategy"), tuple(headers) if headers else None)

    def describe(self) -> str:
        parts = [f"max_tiles={self.max_tiles}"] if self.max_tiles else []
        if self.strategy:
            parts.append(f"strategy={self.strategy!r}")
        if self.headers:
            parts.append(f"headers={list(self.headers)}")
        return ", ".join(parts)


def make_clip_spec(max_tiles, strategy, headers) -> ClipSpec | None:
    """Validate ``clip()``'s arguments; None means no clipping at all."""
    if max_tiles is None:
        max_tiles = 0
    if isinstance(max_tiles, bool) or not isinstance(max_tiles, int) or max_tiles < 0:
        raise DatasetError(f"clip(max_tiles={max_tiles!r}): give a number of tiles >= 0 (0 = no per-TFRecord cap)")
    if strategy not in CLIP_STRATEGIES:
        raise DatasetError(f"clip(strategy={strategy!r}): choose one of {list(CLIP_STRATEGIES)}")
    if isinstance(headers, str):
        headers = [headers]
    if strategy == "category":
        if not headers:
            raise DatasetError("clip(strategy='category') needs headers=[annotation column(s)] defining the categories")
        headers = tuple(str(h) for h in headers)
    elif headers:
        raise DatasetError(f"clip(headers={list(headers)}) only applies with strategy='category' (got {strategy!r})")
    else:
        headers = None
    if not max_tiles and strategy is None:
        return None
    return ClipSpec(max_tiles, strategy, headers)


def spread(budget: int, caps: Sequence[int]) -> list[int]:
    """Split ``budget`` tiles over members with ``caps``, proportionally, by largest remainder (ties: first).

    >>> spread(10, [3, 3, 3, 3])
    [3, 3, 2, 2]
    """
    caps = [int(c) for c in caps]
    whole = sum(caps)
    if budget >= whole:
        return caps
    if budget <= 0 or whole == 0:
        return [0] * len(caps)
    shares = [budget * c // whole for c in caps]
    remainders = [budget * c % whole for c in caps]
    left = budget - sum(shares)
    for k in sorted(range(len(caps)), key=lambda k: (-remainders[k], k))[:left]:
        shares[k] += 1
    return shares


def clip_counts(totals: Sequence[int], spec: ClipSpec | None, groups: Sequence[Hashable] | None = None) -> list[int]:
    """Clipped tile count of each TFRecord (``totals`` in path order; ``groups`` for 'patient'/'category')."""
    totals = [int(t) for t in totals]
    if spec is None or not totals:
        return totals
    caps = [min(t, spec.max_tiles) for t in totals] if spec.max_tiles else totals
    if spec.strategy is None:
        return caps
    if spec.strategy == "slide":
        floor = min(caps)
        return [floor] * len(caps)
    if groups is None or len(groups) != len(caps):
        raise ValueError("clip by patient or category needs one group key per TFRecord")
    members: dict[Hashable, list[int]] = {}
    for i, key in enumerate(groups):
        members.setdefault(key, []).append(i)
    budget = min(sum(caps[i] for i in idx) for idx in members.values())
    clipped = [0] * len(caps)
    for idx in members.values():
        for i, n in zip(idx, spread(budget, [caps[i] for i in idx])):
            clipped[i] = n
    return clipped
