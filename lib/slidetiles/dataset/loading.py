"""``Dataset.torch`` / ``Dataset.tensorflow`` and loaders straight from the pipeline's artifacts.

The loaders themselves (:mod:`slidetiles.loaders`) work on plain :class:`~slidetiles.loaders.TileSource` rows; this
module turns a Dataset (its TFRecords, clip limits, balance weights and labels) into those rows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from slidetiles.dataset import Dataset
from slidetiles.errors import DatasetError, MissingLabelError, SplitError
from slidetiles.loaders.sources import sources_from_table
from slidetiles.splits import load_splits


def label_dict(dataset, labels, use_float=False) -> dict | None:
    """``{slide: label}`` for the loaders: from a header (category indices in sorted order, as Slideflow's
    ``Dataset.labels``; floats for continuous headers) or a ready dict; None without labels."""
    if labels is None:
        return None
    if isinstance(labels, Mapping):
        return dict(labels)
    frame = dataset.annotations
    for header in [labels] if isinstance(labels, str) else list(labels):
        if header in frame.columns:
            blank = frame.loc[frame[header].astype(str).str.strip() == "", "slide"].tolist()
            if blank:
                # Slideflow would make '' a class of its own; a training label must not be silently blank.
                raise MissingLabelError(
                    blank, f"{len(blank)} slide(s) have no {header!r} label: {', '.join(blank[:10])}; "
                    f"drop them first with dataset.filter(filter_blank={header!r})"
                )
    values, _ = dataset.labels(labels, use_float=use_float)
    return values


def dataset_sources(dataset, labels=None, use_float=False):
    """One :class:`~slidetiles.loaders.TileSource` per retained TFRecord, with clip and balance applied."""
    return sources_from_table(dataset.slide_table(), labels=label_dict(dataset, labels, use_float))


def torch_loader(dataset, labels=None, batch_size: int = 32, *, use_float=False, **options):
    """See :meth:`slidetiles.Dataset.torch`."""
    from slidetiles.loaders import make_torch_loader  # imports torch: only when a torch loader is asked for

    sources = dataset_sources(dataset, labels, use_float)
    if not sources:
        raise DatasetError("torch(): the dataset retains no TFRecords (check its filters)")
    return make_torch_loader(sources, batch_size=batch_size, labels=labels is not None, **options)


def tensorflow_dataset(dataset, labels=None, batch_size: int = 32, *, use_float=False, **options):
    """See :meth:`slidetiles.Dataset.tensorflow`."""
    from slidetiles.loaders import make_tf_dataset  # imports TensorFlow: only when a tf.data pipeline is asked for

    sources = dataset_sources(dataset, labels, use_float)
    if not sources:
        raise DatasetError("tensorflow(): the dataset retains no TFRecords (check its filters)")
    return make_tf_dataset(sources, batch_size=batch_size, labels=labels is not None, **options)


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
