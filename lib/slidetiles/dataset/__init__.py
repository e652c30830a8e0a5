"""``slidetiles.Dataset``: slides, annotations and TFRecords at one tile size, filtered, clipped and balanced in
memory, and saved as a manifest JSON for later pipeline stages.

Modules, one job each: :mod:`~slidetiles.dataset.sources` (datasets.json / YAML, tile sizes and label folders),
:mod:`~slidetiles.dataset.annotations` (loading and validating annotations), :mod:`~slidetiles.dataset.tilecounts`
and :mod:`~slidetiles.dataset.catalog` (TFRecords and their tile counts from index files),
:mod:`~slidetiles.dataset.clipping` and :mod:`~slidetiles.dataset.balancing` (tiles taken and sampling weights),
:mod:`~slidetiles.dataset.dataset` (the class), :mod:`~slidetiles.dataset.manifest` (the JSON artifact),
:mod:`~slidetiles.dataset.project` (Slideflow project folders), :mod:`~slidetiles.dataset.summary`.
"""

from slidetiles.dataset.dataset import Dataset
from slidetiles.dataset.project import Project, load_project
from slidetiles.dataset.sources import tile_label

__all__ = ["Dataset", "Project", "load_project", "tile_label"]
