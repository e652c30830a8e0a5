"""``splits.json``: saved splits in Slideflow's format, with what Slideflow lacks carried in extra keys.

The file is a JSON list; each entry is one saved split. Slideflow reads ``strategy``, ``patients`` and
``tfrecords`` and ignores every other key, so entries written here stay readable by Slideflow, and entries written
by Slideflow are reused here as they are. An entry written by slidetiles looks like this (``k-fold``, k = 2)::

    {
      "strategy": "k-fold",
      "patients": {
        "p1": {"outcome_label": 0, "slides": ["s1", "s2"]},
        "p2": {"outcome_label": 1, "slides": ["s3"]}, ...
      },
      "tfrecords": {"k-fold-1": ["s1", "s2", ...], "k-fold-2": ["s3", ...]},
      "k_fold": 2,
      "fraction": null,
      "seed": 0,
      "model_type": "categorical",
      "outcome_labels": {"0": "A", "1": "B"},
      "validation": {"1": ["s1", "s2", ...], "2": ["s3", ...]},
      "fingerprint": "3f0c...e1",
      "created_by": "slidetiles"
    }

* ``outcome_label``: Slideflow's encoding, the value its training code compares (see
  :func:`~slidetiles.splits.cohort.slideflow_outcomes`): the category's index for a categorical column (categories
  sorted, numbered over every annotated slide passing the filters, as ``Dataset.labels`` does), ``[float]`` for a
  linear one, the patient for an unlabelled split. Entries from older slidetiles releases (the label's name, a bare
  float, null) are still read.
* ``outcome_labels``: what each index means (categorical column labels only); Slideflow ignores it.
* ``tfrecords``: Slideflow's key. For k-fold strategies ``k-fold-i`` lists the slides validated in iteration ``i``
  (training is every other fold); for ``fixed``, ``training`` and ``validation``.
* ``validation``: the same answer for every strategy, iteration (1-based, as a string) to validation slides.
* ``seed``, ``fraction``, ``k_fold``, ``model_type``: the inputs Slideflow does not record.
* ``fingerprint``: sha256 of a canonical JSON of the inputs (patients, slides, labels, sites, strategy, k, fraction,
  seed, and the fold column for ``k-fold-manual``), so a reviewer can check a split was made from the data claimed
  (:func:`split_fingerprint`).
* ``k-fold-preserved-site`` adds ``sites`` (site -> 1-based fold) and ``solver`` (objective, bound, gap,
  proved_optimal, method); ``k-fold-manual`` adds ``k_fold_header`` and ``manual_folds`` (fold number -> value).
* Patients carry ``site`` only for preserved-site splits, as in Slideflow.

No timestamps, no version, sorted lists and a fixed key order: the same inputs give the same bytes, also with a
later slidetiles release (a paper's split must regenerate byte for byte a year on; the fingerprint, not a version
string, records what it was made from).

Writers hold an exclusive ``fcntl.flock`` on ``<path>.lock`` for the whole read-modify-write and replace the file
atomically, so two processes (say, two Snakemake jobs for two folds) never lose each other's entries and a reader
never sees half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import warnings

import pandas as pd

from slidetiles.errors import SplitError, listing
from slidetiles.io.writer import atomic_write
from slidetiles.splits.cohort import SplitWarning, json_value, label_values
from slidetiles.splits.strategies import validation_count

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, single writers only.
    fcntl = None

#: Strategies saved to (and reused from) splits.json. ``bootstrap`` draws fresh every run and ``none`` has no split.
SAVED_STRATEGIES = ("fixed", "k-fold", "k-fold-manual", "k-fold-preserved-site")

_FOLD_KEY = re.compile(r"^k-fold-(\d+)$")


def load_splits(path: str | os.PathLike) -> list[dict]:
    """The saved splits in ``path``: ``[]`` when the file does not exist or is empty.

    Raises:
        SplitError: the file is not JSON or not a list of objects (the message names the file).

    Example:
        >>> load_splits("does/not/exist.json")
        []
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return []
    if not text.strip():
        return []
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as e:
        raise SplitError(f"{path}: not valid JSON ({e}); fix or move the file") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise SplitError(f"{path}: a splits file must be a JSON list of objects (Slideflow's format)")
    return entries


def dumps_splits(entries: list[dict]) -> str:
    """The file's text: 2-space indented JSON in the entries' own key order, ending with a newline."""
    return json.dumps(entries, indent=2, sort_keys=False, ensure_ascii=True) + "\n"


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _json_label(label):
    if label is None:
        return None
    if isinstance(label, (int, float)) or hasattr(label, "dtype"):
        return float(label)
    return str(label)


def split_fingerprint(table: pd.DataFrame, strategy: str, k: int, fraction: float | None, seed: int | None,
                      model_type: str, extra: dict | None = None) -> str:
    """sha256 (hex) of a canonical JSON of a split's inputs.

    Covers each patient's slides, label and site, plus strategy, k, fraction, seed, model type and ``extra`` (the
    manual fold of each patient for ``k-fold-manual``). Independent of row order, hash seed and platform.

    Example:
        >>> table = pd.DataFrame({"slides": [["s1"]], "label": ["A"], "site": [None]},
        ...                      index=pd.Index(["p1"], name="patient"))
        >>> len(split_fingerprint(table, "k-fold", 3, None, 0, "categorical"))
        64
    """
    patients = [[str(p), sorted(str(s) for s in slides), _json_label(label), None if site is None else str(site)]
                for p, slides, label, site in zip(table.index, table["slides"], table["label"], table["site"])]
    payload = {
        "format": 1,
        "strategy": strategy,
        "k": int(k),
        "fraction": fraction,
        "seed": seed,
        "model_type": model_type,
        "patients": sorted(patients),
        "extra": extra or {},
    }
    return hashlib.sha256(_canonical(payload).encode("ascii")).hexdigest()


def default_outcomes(table: pd.DataFrame, model_type: str) -> dict[str, object]:
    """Slideflow's ``outcome_label`` of each patient when the table has no ``outcome`` column: the label's index
    among the table's own sorted labels, ``[float]`` for linear labels, the patient when unlabelled."""
    labels = label_values(table)
    position = {label: i for i, label in enumerate(labels)}
    out = {}
    for p, label in zip(table.index, table["label"]):
        if labels == [None]:
            out[str(p)] = str(p)
        elif model_type == "linear":
            out[str(p)] = [float(label)]
        else:
            out[str(p)] = position[label]
    return out


def _outcomes(table: pd.DataFrame, model_type: str) -> dict[str, object]:
    if "outcome" in table.columns:
        return {str(p): json_value(v) for p, v in zip(table.index, table["outcome"])}
    return default_outcomes(table, model_type)


def make_entry(table: pd.DataFrame, *, strategy: str, validation_patients: list[list[str]], seed: int,
               fraction: float | None, model_type: str, extra: dict | None = None,
               fingerprint_extra: dict | None = None, outcome_labels: dict | None = None) -> dict:
    """A splits.json entry for ``table`` split into ``validation_patients`` (one list per iteration).

    Each patient's ``outcome_label`` is the table's ``outcome`` column (Slideflow's encoding, see
    :func:`~slidetiles.splits.cohort.slideflow_outcomes`), or :func:`default_outcomes` without one.
    ``outcome_labels`` (index -> name) is recorded after ``model_type`` when given. ``extra`` holds
    strategy-specific keys appended after the common ones (``sites``/``solver``, ``k_fold_header``/
    ``manual_folds``); ``fingerprint_extra`` what the fingerprint must cover beyond the table.

    Example:
        >>> table = pd.DataFrame({"slides": [["s1"], ["s2"]], "label": ["A", "B"], "site": [None, None]},
        ...                      index=pd.Index(["p1", "p2"], name="patient"))
        >>> entry = make_entry(table, strategy="k-fold", validation_patients=[["p1"], ["p2"]], seed=0,
        ...                    fraction=None, model_type="categorical")
        >>> entry["tfrecords"], entry["validation"], entry["patients"]["p2"]["outcome_label"]
        ({'k-fold-1': ['s1'], 'k-fold-2': ['s2']}, {'1': ['s1'], '2': ['s2']}, 1)
    """
    slides_of = {str(p): sorted(str(s) for s in slides) for p, slides in zip(table.index, table["slides"])}
    outcomes = _outcomes(table, model_type)
    patients = {}
    with_site = strategy == "k-fold-preserved-site"
    for p, site in zip(table.index, table["site"]):
        record = {"outcome_label": outcomes[str(p)], "slides": slides_of[str(p)]}
        if with_site:
            record["site"] = None if site is None else str(site)
        patients[str(p)] = record
    validation = [sorted(s for p in fold for s in slides_of[str(p)]) for fold in validation_patients]
    if strategy == "fixed":
        held_out = set(validation[0])
        training = sorted(s for slides in slides_of.values() for s in slides if s not in held_out)
        tfrecords = {"training": training, "validation": validation[0]}
        k = 1
    else:
        tfrecords = {f"k-fold-{i}": fold for i, fold in enumerate(validation, start=1)}
        k = len(validation)
    entry = {
        "strategy": strategy,
        "patients": patients,
        "tfrecords": tfrecords,
        "k_fold": k,
        "fraction": fraction,
        "seed": seed,
        "model_type": model_type,
    }
    if outcome_labels:
        entry["outcome_labels"] = outcome_labels
    entry["validation"] = {str(i): fold for i, fold in enumerate(validation, start=1)}
    entry.update(extra or {})
    entry["fingerprint"] = split_fingerprint(table, strategy, k, fraction, seed, model_type, fingerprint_extra)
    entry["created_by"] = "slidetiles"
    return entry


def _fold_count(tfrecords: dict) -> int | None:
    """k of a k-fold entry: its ``k-fold-i`` keys must be exactly 1..k."""
    numbers = sorted(int(m.group(1)) for key in tfrecords if (m := _FOLD_KEY.match(str(key))))
    if not numbers or numbers != list(range(1, len(numbers) + 1)) or len(numbers) != len(tfrecords):
        return None
    return len(numbers)


def _number(value):
    """A JSON number as float (bools are not numbers here), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _same_value(stored, expected) -> bool:
    """Equal as Slideflow compares them after a JSON round trip: ``1 == 1.0``, lists element-wise, bools apart."""
    if isinstance(expected, list):
        return (isinstance(stored, list) and len(stored) == len(expected)
                and all(_same_value(a, b) for a, b in zip(stored, expected)))
    if isinstance(stored, bool) or isinstance(expected, bool):
        return stored is expected
    a, b = _number(stored), _number(expected)
    if a is not None or b is not None:
        return a is not None and b is not None and a == b
    return stored == expected


def _same_label(stored, expected, label, model_type: str) -> bool:
    """Whether a saved ``outcome_label`` stands for this patient's label.

    ``expected`` is Slideflow's encoding (what we write now); ``label`` the name or number the encoding stands for,
    which older slidetiles releases wrote instead (a name, a bare float, null when unlabelled).
    """
    if _same_value(stored, expected):
        return True
    if label is None:
        return stored is None
    if model_type == "linear":
        if isinstance(stored, list) and len(stored) == 1:
            stored = stored[0]
        number = _number(stored)
        return number is not None and number == float(label)
    return isinstance(stored, str) and stored == label


def _label(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _label_differences(patients: dict, table: pd.DataFrame, outcomes: dict, model_type: str) -> list[str]:
    """``"p (saved X, expected Y)"`` for each patient whose saved label is not this one's."""
    out = []
    for p, label in zip(table.index, table["label"]):
        record = patients.get(str(p))
        stored = record.get("outcome_label") if isinstance(record, dict) else None
        if not isinstance(record, dict) or not _same_label(stored, outcomes[str(p)], _label(label), model_type):
            out.append(f"{p} (saved {json.dumps(stored)}, expected {json.dumps(outcomes[str(p)])})")
    return out


def _labels_match(patients: dict, table: pd.DataFrame, model_type: str, outcomes: dict | None = None) -> bool:
    outcomes = _outcomes(table, model_type) if outcomes is None else outcomes
    return not _label_differences(patients, table, outcomes, model_type)


def _sites_match(patients: dict, table: pd.DataFrame) -> bool:
    return all(isinstance(patients[str(p)], dict) and patients[str(p)].get("site") == (None if s is None else str(s))
               for p, s in zip(table.index, table["site"]))


def _validation_sizes(n: int, fraction: float) -> set[int]:
    # Slideflow truncates (int(fraction * n)); slidetiles rounds half up. Either reading of the fraction will do.
    return {int(fraction * n), validation_count(n, fraction)}


def entry_validation_patients(entry: dict) -> list[list[str]]:
    """The validation patients of each iteration of a saved entry, checked for consistency.

    Works on Slideflow's own entries (which list slides, not patients): every listed slide must belong to a patient
    of the entry, no patient may sit in two folds, and every patient must be placed.

    Raises:
        SplitError: the entry is inconsistent (the message says how).

    Example:
        >>> entry = {"strategy": "k-fold", "patients": {"p1": {"outcome_label": "A", "slides": ["s1"]},
        ...          "p2": {"outcome_label": "B", "slides": ["s2"]}}, "tfrecords": {"k-fold-1": ["s2"],
        ...          "k-fold-2": ["s1"]}}
        >>> entry_validation_patients(entry)
        [['p2'], ['p1']]
    """
    patients = entry.get("patients")
    tfrecords = entry.get("tfrecords")
    if not isinstance(patients, dict) or not isinstance(tfrecords, dict):
        raise SplitError("saved split lacks 'patients' or 'tfrecords'")
    owner: dict[str, str] = {}
    for p, record in patients.items():
        for s in (record or {}).get("slides", []) if isinstance(record, dict) else []:
            if owner.setdefault(str(s), str(p)) != str(p):
                raise SplitError(f"saved split lists slide {s} under two patients ({owner[str(s)]}, {p})")
    if entry.get("strategy") == "fixed":
        keys = ["validation", "training"]
        if any(key not in tfrecords for key in keys):
            raise SplitError("saved fixed split lacks tfrecords 'training' or 'validation'")
    else:
        k = _fold_count(tfrecords)
        if k is None:
            raise SplitError(f"saved split has fold keys {listing(sorted(tfrecords))}, not k-fold-1..k-fold-k")
        keys = [f"k-fold-{i}" for i in range(1, k + 1)]
    where: dict[str, str] = {}
    groups: list[list[str]] = []
    for key in keys:
        members = set()
        for s in tfrecords[key]:
            p = owner.get(str(s))
            if p is None:
                raise SplitError(f"saved split lists slide {s} under {key!r} but under no patient")
            if where.setdefault(p, key) != key:
                raise SplitError(f"saved split puts patient {p} in both {where[p]!r} and {key!r}")
            members.add(p)
        groups.append(sorted(members))
    unplaced = sorted(set(str(p) for p in patients) - set(where))
    if unplaced:
        raise SplitError(f"saved split places no slide of patients {listing(unplaced)}")
    return groups[:1] if entry.get("strategy") == "fixed" else groups


def find_matching(entries: list[dict], strategy: str, k: int, fraction: float | None,
                  patients_table: pd.DataFrame, *, seed: int | None = None, model_type: str = "categorical",
                  folds: list[list[str]] | None = None, outcome_labels: dict | None = None,
                  source: str | None = None) -> tuple[int, dict] | None:
    """The first saved split to reuse for these inputs, as ``(index, entry)``, or None.

    An entry matches when its strategy, fold count (k-fold strategies), exact patient set and per-patient labels
    match, plus each patient's site for ``k-fold-preserved-site``: what Slideflow compares. Labels match in
    Slideflow's encoding (the table's ``outcome`` column, see
    :func:`~slidetiles.splits.cohort.slideflow_outcomes`) or, for entries of older slidetiles releases, as the
    label's name, a number, or null when unlabelled. Then:

    * entries written by slidetiles (they carry ``seed``) must also match ``seed`` (unless ``seed`` is None),
      ``fraction`` and ``model_type``;
    * Slideflow's own ``fixed`` entries have no fraction, so their validation size must be what ``fraction`` gives
      (Slideflow truncates, slidetiles rounds: either);
    * ``folds`` (patients per fold), when given, must equal the saved folds: ``k-fold-manual`` passes the folds read
      from the annotations, so a changed fold column never reuses a stale split.

    When nothing matches but an entry differs only in its labels, a :class:`SplitWarning` (prefixed with
    ``source``, the file) names it and the patients whose saved label differs, and explains a renumbering of the
    categories (``outcome_labels``, this split's category names) when that is the cause: the caller then saves a
    new split, as Slideflow would, but not silently.

    Slides are not compared (Slideflow does not either): a saved split assigns patients, and a patient's new or
    missing slide follows the patient (the planner warns).

    Example:
        >>> find_matching([], "k-fold", 3, None, table)  # doctest: +SKIP
    """
    wanted = sorted(str(p) for p in patients_table.index)
    n = len(wanted)
    outcomes = _outcomes(patients_table, model_type)
    near: list[tuple[int, dict, list[str]]] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or entry.get("strategy") != strategy:
            continue
        tfrecords, patients = entry.get("tfrecords"), entry.get("patients")
        if not isinstance(tfrecords, dict) or not isinstance(patients, dict):
            continue
        if strategy == "fixed":
            if "validation" not in tfrecords or "training" not in tfrecords:
                continue
        elif _fold_count(tfrecords) != k:
            continue
        if sorted(str(p) for p in patients) != wanted:
            continue
        if strategy == "k-fold-preserved-site" and not _sites_match(patients, patients_table):
            continue
        if "seed" in entry:
            if seed is not None and entry.get("seed") != seed:
                continue
            if entry.get("model_type", model_type) != model_type:
                continue
            if strategy == "fixed" and not _same_number(entry.get("fraction"), fraction):
                continue
        elif strategy == "fixed" and fraction is not None:
            if len(_checked_groups(entry, index)[0]) not in _validation_sizes(n, fraction):
                continue
        if folds is not None and _checked_groups(entry, index) != [sorted(f) for f in folds]:
            continue
        differences = _label_differences(patients, patients_table, outcomes, model_type)
        if differences:
            near.append((index, entry, differences))
            continue
        return index, entry
    if near:
        _warn_near_miss(near, patients_table, outcome_labels, source)
    return None


def _names_of(outcome_labels) -> dict[str, str] | None:
    """``{"0": name}`` of a single-column ``outcome_labels`` record, else None."""
    if isinstance(outcome_labels, dict) and outcome_labels and all(
            isinstance(v, str) for v in outcome_labels.values()):
        return outcome_labels
    return None


def _warn_near_miss(near: list, table: pd.DataFrame, outcome_labels: dict | None, source: str | None) -> None:
    index, entry, differences = near[0]
    where = f"{source}: " if source else ""
    message = (f"{where}saved split #{index} ({entry.get('strategy')}) has these patients and settings but other "
               f"outcome labels for {listing(differences, limit=3)}")
    saved_names, names = _names_of(entry.get("outcome_labels")), _names_of(outcome_labels)
    renumbered = saved_names is not None and names is not None and saved_names != names
    if renumbered:
        message += f"; it numbers the categories {json.dumps(saved_names)}, this split {json.dumps(names)}"
    extra = []
    if names is not None:
        carried = {str(v) for v in table["label"]}
        extra = [name for name in names.values() if name not in carried]
        if extra:
            message += (f". Categories {listing(repr(v) for v in extra)} come only from annotated slides outside "
                        "this split (slides without a TFRecord, say): Slideflow numbers every category of the "
                        "filtered annotations, so they shift the indices")
    message += ". Making a new split instead of reusing it"
    if renumbered or extra:
        message += "; to reuse it, split with the annotations and filters it was saved with"
    warnings.warn(message, SplitWarning, stacklevel=4)


def _checked_groups(entry: dict, index: int) -> list[list[str]]:
    try:
        return entry_validation_patients(entry)
    except SplitError as e:
        raise SplitError(f"saved split #{index}: {e}") from None


def _same_number(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return float(a) == float(b)


@contextlib.contextmanager
def locked(path: str | os.PathLike):
    """Hold an exclusive lock on ``<path>.lock`` (created beside the file and left there).

    ``flock`` locks are per open file, so this must not be nested on the same path in one process. On a read-only
    folder no lock can be taken; reading still works, and a write then fails with a clear error.
    """
    lock_path = os.fspath(path) + ".lock"
    try:
        handle = open(lock_path, "a")
    except OSError:
        yield False
        return
    with handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield True
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _write_atomic(path: str, text: str) -> None:
    # A splits file is a record kept for years, often in a shared project folder: flush it to disk and keep the
    # permissions of the file it replaces.
    with atomic_write(path, "w", fsync=True, keep_mode=True) as f:
        f.write(text)
    with contextlib.suppress(OSError):
        folder = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def _prepare_folder(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    with contextlib.suppress(OSError):
        os.makedirs(folder, exist_ok=True)


def _append_unlocked(path: str, entries: list[dict], entry: dict, had_lock: bool) -> int:
    if not had_lock:
        raise SplitError(f"{path}: cannot create the lock file {path}.lock to save the split; is the folder writable?")
    entries.append(entry)
    try:
        _write_atomic(path, dumps_splits(entries))
    except OSError as e:
        raise SplitError(f"{path}: cannot save the split ({e.strerror or e})") from e
    return len(entries) - 1


def append_split(path: str | os.PathLike, entry: dict) -> int:
    """Append ``entry`` to the splits file at ``path`` (created if missing); returns its index.

    Read, append and atomic replace happen under the file's lock, so concurrent writers never lose an entry.

    Example:
        >>> append_split("splits.json", entry)  # doctest: +SKIP
        0
    """
    path = os.fspath(path)
    _prepare_folder(path)
    with locked(path) as had_lock:
        return _append_unlocked(path, load_splits(path), entry, had_lock)


def reuse_or_append(path: str | os.PathLike, find, build) -> tuple[int, dict, bool]:
    """Reuse a saved split or save a new one, as one step under the file's lock.

    ``find(entries)`` returns ``(index, entry)`` or None; ``build()`` makes the new entry. Holding the lock from the
    read to the write means parallel jobs asking for the same split all end up with the first one saved, even when
    building it is not deterministic (a solver stopped by its time limit).

    Returns:
        ``(index, entry, reused)``.
    """
    path = os.fspath(path)
    _prepare_folder(path)
    with locked(path) as had_lock:
        entries = load_splits(path)
        found = find(entries)
        if found is not None:
            return found[0], found[1], True
        entry = build()
        return _append_unlocked(path, entries, entry, had_lock), entry, False


def warn_changed_slides(entry: dict, table: pd.DataFrame, path: str, index: int) -> None:
    """Warn when a reused entry's patients now have other slides than those it saved (they follow the patient)."""
    changed = []
    for p, slides in zip(table.index, table["slides"]):
        saved = entry["patients"][str(p)].get("slides", [])
        if sorted(str(s) for s in saved) != sorted(slides):
            changed.append(str(p))
    if changed:
        warnings.warn(f"{path}: reusing saved split #{index}, but patients {listing(changed)} now have other slides "
                      f"than it lists; their current slides follow them to the saved side", SplitWarning, stacklevel=3)
