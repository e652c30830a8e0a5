"""``Dataset.torch`` / ``Dataset.tensorflow``: a Dataset's tiles as training loaders.

The loaders themselves (:mod:`slidetiles.loaders`) work on plain :class:`~slidetiles.loaders.TileSource` rows; this
module turns a Dataset (its TFRecords, clip limits, balance weights and labels) into those rows.
"""

from __future__ import annotations

from collections.abc import Mapping

from slidetiles.errors import DatasetError, MissingLabelError
from slidetiles.loaders.sources import sources_from_table


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
