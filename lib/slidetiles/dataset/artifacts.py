"""Training loaders straight from the pipeline's artifacts: a manifest JSON and a splits JSON, one fold.

Apart from :mod:`~slidetiles.dataset.loading` because it builds a :class:`Dataset` (from the manifest), while
``Dataset.torch``/``tensorflow`` use ``loading``: so neither module imports the other's importer.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from slidetiles.dataset.dataset import Dataset
from slidetiles.dataset.loading import label_dict, tensorflow_dataset, torch_loader
from slidetiles.errors import SplitError
from slidetiles.splits import load_splits


def _validation_slides(entry: dict, fold: int, splits: str) -> list[str]:
    validation = entry.get("validation")
    if validation is not None:
        key = str(fold)
        if key not in validation:
            raise SplitError(f"{splits}: no fold {fold}; this split has folds {', '.join(sorted(validation, key=int))}")
        return list(validation[key])
    tfrecords = entry.get("tfrecords", {})
    if "validation" in tfrecords:  # a Slideflow 'fixed' split
        if fold != 1:
            raise SplitError(f"{splits}: a fixed split has one iteration; fold must be 1, got {fold}")
        return list(tfrecords["validation"])
    key = f"k-fold-{fold}"
    if key not in tfrecords:
        raise SplitError(f"{splits}: no {key!r}; this split has {', '.join(sorted(tfrecords))}")
    return list(tfrecords[key])


def loaders_from_artifacts(
    manifest: str | os.PathLike,
    splits: str | os.PathLike,
    fold: int = 1,
    *,
    labels=None,
    framework: str = "torch",
    batch_size: int = 32,
    entry: int | None = None,
    use_float=False,
    val_options: Mapping | None = None,
    **options,
):
    """``(train, val)`` loaders for one fold, straight from a pipeline manifest and splits JSON.

    The manifest gives the TFRecords (refused if any changed since it was written), clip limits and balance
    weights; the splits file (ours or Slideflow's) which slides validate in ``fold`` (1-based). Labels are encoded
    on the whole manifest, so both loaders map classes to the same indices. The training loader takes
    ``options`` (``num_workers``, ``augment``, ``infinite``, ``seed``, ``rank``, ``world_size``...); the
    validation loader reads every tile once, without augmentation, unless ``val_options`` says otherwise.

    Example:
        >>> from slidetiles import loaders_from_artifacts
        >>> train, val = loaders_from_artifacts("results/manifests/all.json", "results/splits/kfold3.json",
        ...                                     fold=1, labels="label", batch_size=64, num_workers=2)  # doctest: +SKIP
        >>> for images, labels in train: ...  # doctest: +SKIP
    """
    if framework not in ("torch", "tensorflow"):
        raise ValueError(f"framework must be 'torch' or 'tensorflow', got {framework!r}")
    dataset = Dataset.from_manifest(manifest)
    entries = load_splits(splits)
    if entry is None:
        if len(entries) != 1:
            raise SplitError(f"{splits} holds {len(entries)} splits; pass entry=<0-based index> to choose one")
        entry = 0
    validation = set(_validation_slides(entries[entry], int(fold), os.fspath(splits)))
    slides = dataset.slides()
    unknown = sorted(validation - set(slides))
    if unknown and len(unknown) == len(validation):
        raise SplitError(f"{splits}: none of the validation slides of fold {fold} are in {manifest}")
    encoded = label_dict(dataset, labels, use_float)
    train = dataset.filter(filters={"slide": [s for s in slides if s not in validation]})
    val = dataset.filter(filters={"slide": [s for s in slides if s in validation]})
    make = torch_loader if framework == "torch" else tensorflow_dataset
    val_settings = {**{k: v for k, v in options.items() if k not in ("augment", "infinite")}, "augment": False,
                    "infinite": False, **(val_options or {})}
    return (
        make(train, encoded, batch_size, **options),
        make(val, encoded, batch_size, **val_settings),
    )
