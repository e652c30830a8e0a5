"""Preserved-site cross-validation: every site (hospital) wholly in one fold, labels balanced across folds.

Howard et al., Nature Communications 12:4423 (2021): site-specific signatures leak into models unless each site's
patients sit in a single fold. With x[f][s] = 1 when site s goes to fold f (each site in exactly one fold), minimise

    sum over labels l and folds f of (k * n_fl - N_l) ** 2

where n_fl counts label-l patients in fold f and N_l all label-l patients; with no labels, all patients form one
label and the folds' sizes are balanced. :func:`lower_bound` sums r * (k - r) * k over labels, r = N_l mod k: a
split reaching it is optimal.

Method: greedy start, then a block local search whose moves are solved exactly
------------------------------------------------------------------------------
A block move picks m random folds (two, or more when the folds are small) and redistributes their sites (all of
them when 2**18 splits or fewer cover the block, else a random sample) in the best way, or, once on a plateau, in
a random other way no worse: every one of the up to 2**18 splits is evaluated by meet in the middle, as one
exact matrix product (see ``_Search``). The search walks such plateaus, kicks four random sites when no block
finds another split as good, restarts from a random split every RESTART_WORK units, and stops as soon as the
bound is reached (proved optimal). Instances with k ** (sites - 1) <= 2**20 are enumerated outright instead,
which proves optimality whatever the bound says.

Why, as measured on the 2-core benchmark machine (cohorts drawn as in ``random_site_cohort``):

* Peers on (sites, folds, labels) = (20, 3, 2) / (40, 5, 3) / (80, 5, 3) / (80, 10, 4): CPLEX 10 s 6 / 400 /
  130 / 11,280, CP-SAT 10 s 6 / 50 / 180 / 203,480, HiGHS MILP 1,050 after 120 s on the second; bounds 6 / 50 /
  80 / 480. Here (benchmarks/bench_preserved_site.py, 3 cohorts each): all 9 cohorts of the first three at the
  bound in under 0.1 s; (80, 10, 4) at the bound on 2 of 3 (median 610 = bound) and 200 above it (one patient
  misplaced) on the third, which stayed there with 3x the budget from two seeds; at most 5.5 s. On 48 more
  (80, 10, 4) cohorts the default budget reached the bound on 30; 16 ended 200 above it and 2 400 above; with
  another seed and 3.3x the budget 10 of those 18 reached it, the rest may be unattainable.
* CP-SAT (OR-tools 9.15) lost wherever it was tried: exact squares (AddMultiplicationEquality) found 39,850 and
  25,580 on two (40, 10, 3) cohorts in 20 s with 2 workers, where the block search found 6,250 and 11,180; as a
  pure feasibility problem (every n_fl within one patient of N_l / k) it found no solution in 20 s on
  (80, 10, 4); as a polish started from the block search's split (1 worker, 5 deterministic seconds, 10-22 s of
  wall time) it improved none of 7 splits. It proved optimality on (20, 3, 3) and (20, 5, 3) cohorts, where the
  block search had found the same optimum. It is not used, which also keeps splits independent of OR-tools.
  (highspy was not installed here, so no MILP of our own was measured; peers' HiGHS figure is above.)
* A tabu search over single-site moves and pairwise swaps (all evaluated at once with numpy) stalled at 2,150 to
  5,380 on three (80, 10, 4) cohorts with bounds 550 to 780 (20,000 iterations, 2.4 s); exact two-fold blocks of
  16 sites reached 780 / 950 / 1,090, the first at the bound. Blocks must be whole: sampling 12 of a pair's 16
  sites reached the bound on 1 of 8 cohorts where whole pairs did on 6 of 8 (12,000 blocks each). Blocks of
  2**18 splits did best: 32 of 48 cohorts at the bound against 24 with 2**19 at equal work, and 2**20 needed over
  3x the work for 24 of 32 where 2**18 had 25.
* Restarts and kicks: a plateau walk that fails in one basin often succeeds from another (one cohort stuck 1,000
  above the bound for 40 s from one seed reached it in 1.2 s from another). On 24 (80, 10, 4) cohorts, kicks
  plus restarts reached the bound on 17, restarts alone on 11, restarts twice as often on 6.
* A threaded BLAS spinning for cores on a loaded machine made one solve 13x slower (24.8 s against 1.9 s), hence
  products cut into tiles that BLAS runs on one thread.

Determinism: the same counts, k, seed and work_limit give the same assignment on any machine
---------------------------------------------------------------------------------------------
* The search stops on a deterministic work budget (DEFAULT_WORK units: evaluated splits, weighted by block width,
  plus MOVE_COST per block), never on the clock. ``time_limit`` (default 10 s) is only a safety net; the default
  budget takes 3.5 to 5.5 s on the benchmark machine (less when the bound is reached). If the net fires,
  ``stopped_by_time`` is True and the split may differ on another machine or under other load: raise
  time_limit, or pass time_limit=None.
* All arithmetic is exact: objectives are int64, and the float64 block products only ever hold integers below
  2**53 (checked; larger cohorts switch to int64 products), so BLAS, its threads, SIMD width or summation order
  cannot change a value. Ties are broken by the seeded random stream, never by platform-dependent order.
* Randomness comes only from the raw output of numpy's PCG64 bit generator seeded with the seed (SeedSequence):
  numpy keeps bit-generator streams stable across versions, which it does not promise for Generator's
  distribution methods, so none of those is used (except in ``random_site_cohort``, a benchmark helper).
* Sites are taken in the order given (callers sort them by name; :class:`PreservedSiteSplitter` does), and
  nothing iterates over a set or dict to decide the result.
* Changing any constant of this module changes splits; tests/test_preserved_site.py pins golden assignments.
"""

from __future__ import annotations

import functools
import itertools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from slidetiles.errors import SplitError
from slidetiles.splits.spec import check_seed

__all__ = [
    "PreservedSiteSolution",
    "PreservedSiteSplitter",
    "lower_bound",
    "objective",
    "random_site_cohort",
    "solve_preserved_site",
]

#: Most assignments one block move enumerates: all 2**18 ways to split 18 sites between two folds.
BLOCK_SIZE = 1 << 18
#: Instances with k ** (sites - 1) at most this are enumerated outright, which proves the optimum.
EXHAUSTIVE_SIZE = 1 << 20
#: Default deterministic work budget. A unit is about one assignment evaluated in a block of two folds and four
#: labels (wider blocks are charged more per assignment) and was measured at 1.2 ns on the 2-core machine of the
#: benchmark: the whole budget takes 3.5 to 5.5 s there, leaving the 10 s wall-clock safety net a 2x margin.
DEFAULT_WORK = 3_000_000_000
#: Work charged per block move on top of its assignments: the fixed cost of its numpy calls (measured at about
#: 85 us, 70,000 units), so that the budget tracks running time on small blocks too.
MOVE_COST = 70_000
#: Work after which the search starts again from a random assignment, keeping the best found.
RESTART_WORK = 300_000_000
#: Block moves in a row that change nothing after which the search is deemed stuck and kicked.
STUCK_BLOCKS = 100
#: Sites a kick moves to random folds.
KICK_SITES = 4
#: Chance, in 256ths, that a block takes one fold more than fits whole, enumerating a sample of its sites.
_WIDE_256 = 64
#: Blocks smaller than BLOCK_SIZE / _SMALL_BLOCK always take the extra fold.
_SMALL_BLOCK = 64
#: Row and column tile of the block product, see _Search.block.
_TILE = 128

_DIGITS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


@dataclass(frozen=True)
class PreservedSiteSolution:
    """The result of :func:`solve_preserved_site`.

    Attributes:
        assignment: fold (0..k-1) of each site, in the order the sites were given.
        objective: sum over labels and folds of (k * n_fold_label - N_label) ** 2.
        bound: the lower bound of :func:`lower_bound`; no assignment can have a smaller objective.
        gap: objective - bound; 0 means the assignment is optimal.
        proved_optimal: True when the gap is 0 or every assignment was enumerated.
        seconds: wall-clock time spent (informative only; it never steers the result unless stopped_by_time).
        method: how the assignment was found.
        stopped_by_time: True when the wall-clock safety net ended the search before its work budget; the
            assignment may then differ from one machine to another.
        work: the deterministic budget spent (see DEFAULT_WORK).
        blocks: block moves tried.
        moves: block moves that changed the assignment.
        seed: the seed used.
        fold_counts: patients per fold (rows) and label (columns).
    """

    assignment: tuple[int, ...]
    objective: int
    bound: int
    gap: int
    proved_optimal: bool
    seconds: float
    method: str
    stopped_by_time: bool
    work: int = 0
    blocks: int = 0
    moves: int = 0
    seed: int = 0
    fold_counts: tuple[tuple[int, ...], ...] = field(default=(), repr=False)

    @property
    def k(self) -> int:
        return len(self.fold_counts)


def _as_counts(counts, site_names: Sequence[str] | None = None) -> np.ndarray:
    arr = np.asarray(counts)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise SplitError(
            f"counts must be a (sites, labels) matrix of patient counts; got an array of shape {arr.shape}"
        )
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
            raise SplitError(f"counts must hold whole numbers of patients; got dtype {arr.dtype}")
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise SplitError("counts must hold whole numbers of patients; found non-integer values")
    arr = arr.astype(np.int64)
    if site_names is not None and len(site_names) != arr.shape[0]:
        raise SplitError(f"site_names has {len(site_names)} names but counts has {arr.shape[0]} rows (one per site)")
    negative = np.flatnonzero((arr < 0).any(axis=1))
    if len(negative):
        raise SplitError(
            f"negative patient counts for {_name_sites(negative, site_names)}; "
            "counts must be >= 0 (patients per site and label)"
        )
    return arr


def _name_sites(rows: np.ndarray, site_names: Sequence[str] | None, limit: int = 10) -> str:
    rows = [int(r) for r in rows]
    shown = [repr(site_names[r]) if site_names is not None else f"#{r}" for r in rows[:limit]]
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    noun = "site" if len(rows) == 1 else "sites"
    return f"{noun} {', '.join(shown)}{more}"


def lower_bound(counts, k: int) -> int:
    """The least objective any assignment of sites to ``k`` folds can reach.

    A label with N patients cannot be split more evenly than r = N mod k folds of ceil(N/k) patients and k - r of
    floor(N/k); those cost r * (k - r)**2 + (k - r) * r**2 = r * (k - r) * k. Labels are independent, so the bound
    is the sum; it ignores that sites are indivisible, so it is not always attainable.
    """
    arr = _as_counts(counts)
    totals = arr.sum(axis=0)
    r = totals % k
    return int((r * (k - r) * k).sum())


def objective(counts, assignment: Sequence[int], k: int) -> int:
    """Sum over labels l and folds f of (k * n_fl - N_l)**2 for an assignment of sites to folds 0..k-1."""
    arr = _as_counts(counts)
    folds = np.asarray(assignment, dtype=np.int64)
    if folds.shape != (arr.shape[0],):
        raise SplitError(f"assignment has {folds.size} entries but counts has {arr.shape[0]} sites")
    if len(folds) and (folds.min() < 0 or folds.max() >= k):
        raise SplitError(f"assignment has fold indices outside 0..{k - 1}")
    dev = k * _fold_counts(arr, folds, k) - arr.sum(axis=0)
    return int((dev * dev).sum())


def _fold_counts(arr: np.ndarray, folds: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((k, arr.shape[1]), dtype=np.int64)
    np.add.at(out, folds, arr)
    return out


def random_site_cohort(
    n_sites: int, n_labels: int, seed: int = 0, *, min_size: int = 5, max_size: int = 59
) -> np.ndarray:
    """A random multi-site cohort as benchmarked by peers: (n_sites, n_labels) patients per site and label.

    Each site has a uniform number of patients in [min_size, max_size], a label mix drawn from Dirichlet(2, ..., 2)
    and each patient's label drawn from that mix. Uses numpy's Generator distributions, whose streams numpy may
    change between versions: fine for benchmarks and tests, not a source of reproducible data.
    """
    rng = np.random.default_rng(seed)
    sizes = rng.integers(min_size, max_size + 1, size=n_sites)
    out = np.zeros((n_sites, n_labels), dtype=np.int64)
    for i, size in enumerate(sizes):
        mix = rng.dirichlet(np.full(n_labels, 2.0))
        out[i] = rng.multinomial(int(size), mix)
    return out


def _digits(m: int, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All m**h assignments of h sites to m folds: digits (site i's fold), one-hot (m**h * m, h), and empty (m**h, m)
    telling which folds receive none of the h sites."""
    key = (m, h)
    if key not in _DIGITS:
        codes = np.arange(m**h, dtype=np.int64)
        digits = np.stack([(codes // m**i) % m for i in range(h)], axis=1) if h else np.zeros((1, 0), np.int64)
        member = digits[:, None, :] == np.arange(m)[None, :, None]
        onehot = member.astype(np.float64).reshape(len(codes) * m, h)
        empty = ~member.any(axis=2)
        _DIGITS[key] = (digits, onehot, empty)
    return _DIGITS[key]


class _Search:
    """Block local search over an assignment of sites (all with patients) to folds.

    The state is D[f, l] = k * n_fl - N_l, whose squared sum is the objective. A block move takes m folds and h of
    their sites and enumerates all m**h ways to redistribute those sites among those folds, by meet in the middle:
    with the free sites split into halves A and B, the block's new D is X_i + Y_j (X: the fixed part plus half A's
    choice i, Y: half B's choice j) and its objective |X_i|^2 + |Y_j|^2 + 2 X_i.Y_j for all i, j is one matrix
    product. Every entry and partial sum is an integer below 2**53, so the float64 product is exact in any
    summation order: no BLAS, thread count or SIMD width can change a result.
    """

    def __init__(self, arr: np.ndarray, k: int, rng: np.random.Generator):
        self.arr = arr
        self.k = k
        self.bits = rng.bit_generator
        self.totals = arr.sum(axis=0)
        self.work = 0
        self.moves = 0
        self.blocks = 0
        # |D|, |X| and |Y| entries are at most k * patients; a product entry sums at most 2 k L + 2 such squares,
        # and the penalty that bars empty folds adds up to k times a value above all of them.
        peak = float(k) * float(self.totals.sum()) + 1.0
        self.penalty = 4.0 * (k * arr.shape[1] + 1) * peak * peak
        top = (k + 2) * self.penalty
        if top < 2.0**53:
            self.dtype = np.float64
        elif top < 2.0**63:
            self.dtype = np.int64  # exact too, several times slower
        else:
            raise SplitError(
                f"the cohort is too large for exact 64-bit objective arithmetic ({int(self.totals.sum()):,} patients, "
                f"{k} folds); balance fewer patients (e.g. scale counts down) or use fewer folds"
            )
        self.penalty = int(self.penalty)
        self.buffers: dict[tuple[int, int], np.ndarray] = {}
        #: max_free[m]: the most sites whose m**h splits fit in one block.
        self.max_free = {m: _max_exponent(m, BLOCK_SIZE) for m in range(2, k + 1)}
        self.powers = {m: m ** np.arange(_max_exponent(m, 2**62) + 1, dtype=np.int64) for m in range(2, k + 1)}

    def randint(self, n: int) -> int:
        # Raw PCG64 output is fixed by the algorithm; Generator's samplers may change between numpy versions.
        return int(self.bits.random_raw() % n) if n > 1 else 0

    def shuffled(self, n: int) -> np.ndarray:
        return np.argsort(self.bits.random_raw(n), kind="stable")

    def set_state(self, folds: np.ndarray) -> None:
        self.folds = folds.astype(np.int64)
        self.D = self.k * _fold_counts(self.arr, self.folds, self.k) - self.totals
        self.cnt = np.bincount(self.folds, minlength=self.k)
        self.cur = int((self.D * self.D).sum())

    def block(self, F: np.ndarray, idx: np.ndarray, walk: bool) -> None:
        """Redistribute sites idx among folds F (sorted, each keeping a site).

        walk: move to a random other split that is no worse (a plateau walk); else to a best split.
        """
        k, L = self.k, self.arr.shape[1]
        m, h = len(F), len(idx)
        sub = self.arr[idx]
        pos = np.searchsorted(F, self.folds[idx])
        member = pos[None, :] == np.arange(m)[:, None]
        E = self.D[F] - k * (member.astype(np.int64) @ sub)
        empty = np.flatnonzero(self.cnt[F] == member.sum(axis=1))  # folds whose every site is free
        h1 = h // 2
        h2 = h - h1
        dA, oA, eA = _digits(m, h1)
        dB, oB, eB = _digits(m, h2)
        nA, nB = len(dA), len(dB)
        width = m * L
        cols = width + 2 + len(empty)
        scaled = (k * sub).astype(self.dtype)
        # val[i, j] = |X_i|^2 + |Y_j|^2 + 2 X_i.Y_j + penalty * #(folds left empty)
        #           = [2 X_i, |X_i|^2, 1, penalty * emptyA_i] . [Y_j, 1, |Y_j|^2, emptyB_j]
        xa = np.empty((nA, cols), self.dtype)
        yb = np.empty((cols, nB), self.dtype)
        X = xa[:, :width]
        X[:] = (oA.astype(self.dtype, copy=False) @ scaled[:h1]).reshape(nA, width)
        X += E.reshape(1, width)
        xa[:, width] = np.einsum("ij,ij->i", X, X)
        X *= 2
        xa[:, width + 1] = 1
        Y = (oB.astype(self.dtype, copy=False) @ scaled[h1:]).reshape(nB, width)
        yb[:width] = Y.T
        yb[width] = 1
        yb[width + 1] = np.einsum("ij,ij->i", Y, Y)
        if len(empty):
            xa[:, width + 2 :] = eA[:, empty] * self.penalty
            yb[width + 2 :] = eB[:, empty].T
        buf = self.buffers.get((nA, nB))
        if buf is None:
            # Reused: a fresh half-megabyte array per move costs page faults that outweigh the product itself.
            buf = self.buffers[(nA, nB)] = np.empty((nA, nB), self.dtype)
        # Tiles small enough that BLAS runs each on one thread: on a busy machine a threaded BLAS was measured 13x
        # slower on a 512 x 10 x 512 product, and a block move has no use for threads.
        for r0 in range(0, nA, _TILE):
            for c0 in range(0, nB, _TILE):
                np.matmul(xa[r0 : r0 + _TILE], yb[:, c0 : c0 + _TILE], out=buf[r0 : r0 + _TILE, c0 : c0 + _TILE])
        # Charged in proportion to measured time: per assignment it grows with the product's width (12 columns
        # for two folds of four labels cost 1 unit, about 1.5 ns here), plus a fixed cost per block.
        self.work += nA * nB * (8 + cols) // 20 + MOVE_COST
        self.blocks += 1
        val = buf.ravel()
        old = int((self.D[F] ** 2).sum())
        powers = self.powers[m]
        here = int(pos[:h1] @ powers[:h1]) * nB + int(pos[h1:] @ powers[:h2])
        if walk:
            # Bar the current split and its renamings (same partition, same value) from the walk.
            val[self.relabelings(pos, empty, m, h1, nB)] = self.penalty
            cands = np.flatnonzero(val <= old)
            if len(cands) == 0:
                return
        else:
            cands = np.flatnonzero(val == val.min())
        choice = int(cands[self.randint(len(cands))])
        new = int(val[choice])
        if new >= self.penalty or choice == here:
            return
        i, j = divmod(choice, nB)
        self.folds[idx] = F[np.concatenate([dA[i], dB[j]])]
        self.D[F] = (xa[i, :width] // 2 + Y[j]).reshape(m, L).astype(np.int64)
        self.cnt = np.bincount(self.folds, minlength=k)
        self.cur += new - old
        self.moves += 1

    def kick(self, n_moves: int) -> None:
        """Move n_moves random sites to random folds (never emptying a fold)."""
        folds = self.folds.copy()
        cnt = self.cnt.copy()
        for _ in range(n_moves):
            site = self.randint(len(folds))
            fold = self.randint(self.k)
            if cnt[folds[site]] > 1:
                cnt[folds[site]] -= 1
                cnt[fold] += 1
                folds[site] = fold
        self.set_state(folds)

    def relabelings(self, pos: np.ndarray, empty: np.ndarray, m: int, h1: int, nB: int) -> np.ndarray:
        """Indices of the current split and of its copies with the wholly free folds permuted: same partition."""
        perms = _permutations(len(empty))
        mapping = np.empty((len(perms), m), dtype=np.int64)
        mapping[:] = np.arange(m)
        mapping[:, empty] = empty[perms]
        moved = mapping[:, pos]
        powers = self.powers[m]
        return (moved[:, :h1] @ powers[:h1]) * nB + moved[:, h1:] @ powers[: len(pos) - h1]

    def pick_block(self) -> tuple[np.ndarray, np.ndarray]:
        """Random folds, as many as can be enumerated whole (at least two), sometimes one more with sampled sites."""
        k = self.k
        order = self.shuffled(k)
        m, n_free = 2, int(self.cnt[order[0]] + self.cnt[order[1]])
        # A block is whole when all its folds' sites but one fit (see below).
        while m < k and n_free + int(self.cnt[order[m]]) <= self.max_free[m + 1] + 1:
            n_free += int(self.cnt[order[m]])
            m += 1
        if m < k and (m ** min(n_free, 60) * _SMALL_BLOCK < BLOCK_SIZE or self.randint(256) < _WIDE_256):
            m += 1
        F = np.sort(order[:m])
        chosen = np.zeros(k, dtype=bool)
        chosen[F] = True
        idx = np.flatnonzero(chosen[self.folds])
        h = self.max_free[m]
        if len(idx) <= h + 1:
            # Every partition of a whole block is reachable with one site held where it is (rename the folds),
            # so holding one divides the enumeration by m at no loss.
            idx = np.delete(idx, self.randint(len(idx)))
        else:
            idx = np.sort(idx[self.shuffled(len(idx))[:h]])
        return F, idx


@functools.lru_cache(maxsize=None)
def _permutations(e: int) -> np.ndarray:
    """All orderings of range(e), the identity first, as rows."""
    return np.array(list(itertools.permutations(range(e))), dtype=np.int64).reshape(math.factorial(e), e)


def _max_exponent(m: int, limit: int) -> int:
    """The largest h with m**h <= limit."""
    h = 0
    while m ** (h + 1) <= limit:
        h += 1
    return h


def _greedy(arr: np.ndarray, k: int) -> np.ndarray:
    """Largest site first into the fold where it raises the objective least; the k largest seed the k folds."""
    n = arr.shape[0]
    D = np.tile(-arr.sum(axis=0), (k, 1))
    order = np.lexsort((np.arange(n), -arr.sum(axis=1)))
    folds = np.zeros(n, dtype=np.int64)
    for rank, s in enumerate(order):
        # Adding c to fold f changes the objective by 2k c.D_f + k^2 |c|^2: pick the fold with the least c.D_f.
        score = D @ arr[s]
        f = rank if rank < k else int(np.argmin(score))
        folds[s] = f
        D[f] += k * arr[s]
    return folds


def solve_preserved_site(
    counts,
    k: int,
    *,
    seed: int = 0,
    time_limit: float | None = 10.0,
    site_names: Sequence[str] | None = None,
    work_limit: int | None = None,
) -> PreservedSiteSolution:
    """Assign each site to one of ``k`` folds so that every fold's label counts are as close to 1/k as possible.

    Args:
        counts: (n_sites, n_labels) patients per site and label (a 1-D array is one label: balances fold sizes).
        k: number of folds, 2 <= k <= number of sites with patients.
        seed: seeds the search; the same counts, k, seed and work_limit always give the same assignment.
        time_limit: wall-clock safety net in seconds (None: none). The search normally ends on its deterministic
            work budget long before; if the limit ends it instead, the result says stopped_by_time=True and may
            differ on another machine.
        site_names: names of the sites, in the order of counts' rows, used in error messages.
        work_limit: deterministic work budget, in the units of :data:`DEFAULT_WORK` (its default); raise it for
            hard instances that end above the bound.

    Sites with no patients do not count toward the objective; they go, in input order, to the fold with the fewest
    sites (lowest index on ties).

    Raises:
        SplitError: k < 2, k above the number of sites or of sites with patients, negative or non-integer counts.
    """
    start = time.perf_counter()
    arr = _as_counts(counts, site_names)
    n_sites = arr.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise SplitError(f"k (the number of folds) must be an integer; got {k!r}")
    k = int(k)
    if k < 2:
        raise SplitError(f"k={k}: cross-validation needs at least 2 folds; pass k >= 2")
    if k > n_sites:
        raise SplitError(
            f"k={k} folds but only {n_sites} site{'' if n_sites == 1 else 's'}: each site goes wholly into one fold, "
            "so every fold needs a site; "
            f"pass k <= {n_sites} or add sites"
        )
    active = np.flatnonzero(arr.sum(axis=1) > 0)
    if len(active) < k:
        empty = np.flatnonzero(arr.sum(axis=1) == 0)
        n = len(active)
        fix = f"pass k <= {n}" if n >= 2 else "cross-validation needs patients at 2 sites or more"
        raise SplitError(
            f"k={k} folds but only {n} site{'' if n == 1 else 's'} with patients ({_name_sites(empty, site_names)} "
            f"{'has' if len(empty) == 1 else 'have'} none), so some fold would be empty; {fix}"
        )
    if work_limit is None:
        work_limit = DEFAULT_WORK
    if isinstance(work_limit, bool) or not isinstance(work_limit, (int, np.integer)) or work_limit < 0:
        raise SplitError(f"work_limit must be a whole number >= 0 (or None for the default); got {work_limit!r}")
    if time_limit is not None and not time_limit > 0:
        raise SplitError(f"time_limit must be a positive number of seconds or None; got {time_limit!r}")
    seed = check_seed(seed)
    rng = np.random.Generator(np.random.PCG64(seed))
    sub = arr[active]
    search = _Search(sub, k, rng)
    bound = lower_bound(sub, k)
    deadline = None if time_limit is None else start + float(time_limit)
    stopped_by_time = False
    n_active = len(active)
    exhaustive = n_active == k or k ** (n_active - 1) <= EXHAUSTIVE_SIZE
    if n_active == k:
        # One site per fold: every split is the same partition.
        search.set_state(np.arange(k))
        method = "one site per fold"
        best_folds, best = search.folds.copy(), search.cur
    elif exhaustive:
        # One block with every fold and every site but the first (held in fold 0: any partition can be renamed to
        # put it there) enumerates all partitions: the result is a proved optimum.
        search.set_state(np.zeros(n_active, dtype=np.int64))
        search.block(np.arange(k), np.arange(1, n_active), walk=False)
        method = "exhaustive enumeration"
        best_folds, best = search.folds.copy(), search.cur
    else:
        method = "greedy + block local search"
        best_folds, best = None, None
        while search.work < work_limit and best != bound and not stopped_by_time:
            if best_folds is None:
                search.set_state(_greedy(sub, k))
            else:
                # A fresh random start: runs that stall in one basin were measured to succeed from another.
                start_folds = np.empty(n_active, dtype=np.int64)
                start_folds[search.shuffled(n_active)] = np.arange(n_active) % k
                search.set_state(start_folds)
            if best is None or search.cur < best:
                best, best_folds = search.cur, search.folds.copy()
            restart_at = min(work_limit, search.work + RESTART_WORK)
            last_move = search.blocks
            while best > bound and search.work < restart_at:
                if deadline is not None and time.perf_counter() > deadline:
                    stopped_by_time = True
                    break
                moves = search.moves
                search.block(*search.pick_block(), walk=True)
                if search.moves != moves:
                    last_move = search.blocks
                elif search.blocks - last_move > STUCK_BLOCKS:
                    # No block move finds another split as good: a strict local minimum. Kick a few sites.
                    search.kick(KICK_SITES)
                    last_move = search.blocks
                if search.cur < best:
                    best, best_folds = search.cur, search.folds.copy()
    folds = np.zeros(n_sites, dtype=np.int64)
    folds[active] = best_folds
    sizes = np.bincount(best_folds, minlength=k)
    for s in np.flatnonzero(arr.sum(axis=1) == 0):
        f = int(np.argmin(sizes))
        folds[s] = f
        sizes[f] += 1
    value = objective(arr, folds, k)
    assert value == best, (value, best)
    fold_counts = _fold_counts(arr, folds, k)
    return PreservedSiteSolution(
        assignment=tuple(int(f) for f in folds),
        objective=value,
        bound=bound,
        gap=value - bound,
        proved_optimal=exhaustive or value == bound,
        seconds=time.perf_counter() - start,
        method=method,
        stopped_by_time=stopped_by_time,
        work=search.work,
        blocks=search.blocks,
        moves=search.moves,
        seed=seed,
        fold_counts=tuple(tuple(int(v) for v in row) for row in fold_counts),
    )


class PreservedSiteSplitter:
    """Preserved-site k-fold split of patients given by site (and label), with sites and labels sorted by name.

    Example::

        splitter = PreservedSiteSplitter(k=3, seed=0)
        folds = splitter.split({"p1": "siteA", "p2": "siteB", ...}, {"p1": "tumour", "p2": "normal", ...})
        folds  # {"siteA": 2, "siteB": 0, ...}
        splitter.solution.gap, splitter.solution.proved_optimal
    """

    def __init__(self, k: int, seed: int = 0, time_limit: float | None = 10.0, work_limit: int | None = None):
        self.k = k
        self.seed = seed
        self.time_limit = time_limit
        self.work_limit = work_limit
        self.solution: PreservedSiteSolution | None = None
        self.sites: tuple[str, ...] = ()
        self.labels: tuple[str, ...] = ()

    def split(
        self, patient_sites: Mapping[str, str], patient_labels: Mapping[str, str] | None = None
    ) -> dict[str, int]:
        """Map each site name to its fold (0-based). patient_labels=None balances patient numbers only."""
        if patient_labels is not None:
            missing = sorted(set(patient_sites) - set(patient_labels), key=str)
            if missing:
                more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
                raise SplitError(
                    f"{len(missing)} patients have a site but no label: {', '.join(map(repr, missing[:10]))}{more}; "
                    "give every patient a label or pass patient_labels=None"
                )
        sites = tuple(sorted({str(s) for s in patient_sites.values()}))
        labels = ("",) if patient_labels is None else tuple(sorted({str(patient_labels[p]) for p in patient_sites}))
        site_row = {s: i for i, s in enumerate(sites)}
        label_col = {lab: j for j, lab in enumerate(labels)}
        counts = np.zeros((len(sites), len(labels)), dtype=np.int64)
        for patient, site in patient_sites.items():
            col = 0 if patient_labels is None else label_col[str(patient_labels[patient])]
            counts[site_row[str(site)], col] += 1
        self.sites, self.labels = sites, labels
        self.solution = solve_preserved_site(
            counts, self.k, seed=self.seed, time_limit=self.time_limit, site_names=sites, work_limit=self.work_limit
        )
        return {site: fold for site, fold in zip(sites, self.solution.assignment)}
