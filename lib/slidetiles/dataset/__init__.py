"""``slidetiles.Dataset``: slides, annotations and TFRecords at one tile size, filtered, clipped and balanced in
memory, and saved as a manifest JSON for later pipeline stages.

Modules, one job each: :mod:`~slidetiles.dataset.sources` (datasets.json / YAML, tile sizes and label folders),
:mod:`~slidetiles.dataset.annotations` (loading and validating annotations), :mod:`~slidetiles.dataset.tilecounts`
and :mod:`~slidetiles.dataset.catalog` (TFRecords and their tile counts from index files),
:mod:`~slidetiles.dataset.clipping` and :mod:`~slidetiles.dataset.balancing` (tiles taken and sampling weights),
:mod:`~slidetiles.dataset.state` (a Dataset's state as values: the data as loaded and the spec of what to retain),
:mod:`~slidetiles.dataset.selection` (the filter engine: what a state retains), :mod:`~slidetiles.dataset.labels`
(Slideflow's label encoding), :mod:`~slidetiles.dataset.dataset` (the class, wrapping one state),
:mod:`~slidetiles.dataset.manifest` (a state as the JSON artifact), :mod:`~slidetiles.dataset.summary` (a state as
text), :mod:`~slidetiles.dataset.splitting`, :mod:`~slidetiles.dataset.extraction` and
:mod:`~slidetiles.dataset.loading` (splits, tile extraction and loaders of a Dataset),
:mod:`~slidetiles.dataset.artifacts` (loaders from a manifest and a splits file),
:mod:`~slidetiles.dataset.project` (Slideflow project folders).
"""

from slidetiles.dataset.dataset import Dataset
from slidetiles.dataset.project import Project, load_project
from slidetiles.tile_size import tile_label

__all__ = ["Dataset", "Project", "load_project", "tile_label"]
