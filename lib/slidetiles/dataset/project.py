"""Opening an existing Slideflow project folder: ``slidetiles.load_project(path).dataset(...)``.

A Slideflow project folder holds ``settings.json`` with (among others) ``name``, ``annotations`` (CSV),
``dataset_config`` (datasets.json), ``sources`` (names of the sources to use), ``models_dir`` and ``eval_dir``.
Paths there may be absolute, relative to the project folder (``./annotations.csv``, ``annotations.csv``), or
start with ``$ROOT`` (the project folder), as older Slideflow versions wrote them. Nothing in the folder is
created or modified.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from slidetiles.dataset.dataset import Dataset
from slidetiles.errors import DatasetError

SETTINGS = "settings.json"


def project_path(path: str, root: str) -> str:
    """A path from settings.json as a usable path: ``$ROOT/x`` and relative ``x`` -> ``<root>/x``."""
    if path.startswith("$ROOT"):
        rest = path[len("$ROOT") :].lstrip("/\\")
        return os.path.join(root, rest) if rest else root
    path = os.path.expanduser(path)
    if os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(root, path))


class Project:
    """A Slideflow project folder, read-only.

    Example:
        >>> P = load_project('/project/path')  # doctest: +SKIP
        >>> dataset = P.dataset(tile_px=299, tile_um='10x', sources=['Source1'])  # doctest: +SKIP
    """

    def __init__(self, root: str | os.PathLike):
        self.root = os.fspath(root)
        settings_file = os.path.join(self.root, SETTINGS)
        if not os.path.isdir(self.root):
            raise DatasetError(f"{self.root}: project folder not found")
        try:
            with open(settings_file, encoding="utf-8") as f:
                self.settings = json.load(f)
        except FileNotFoundError:
            raise DatasetError(f"{self.root}: no {SETTINGS}; this is not a Slideflow project folder") from None
        except ValueError as exc:
            raise DatasetError(f"{settings_file}: cannot parse the project settings ({exc})") from None
        if not isinstance(self.settings, dict):
            raise DatasetError(f"{settings_file}: project settings must be a JSON object")
        self._settings_file = settings_file

    def _setting(self, key: str, default=None):
        value = self.settings.get(key, default)
        if value is None:
            raise DatasetError(f"{self._settings_file}: no {key!r} setting")
        return value

    @property
    def name(self) -> str:
        return str(self.settings.get("name", os.path.basename(os.path.normpath(self.root))))

    @property
    def annotations(self) -> str:
        """Path of the annotations CSV."""
        return project_path(self._setting("annotations", "./annotations.csv"), self.root)

    @property
    def dataset_config(self) -> str:
        """Path of the sources config (datasets.json)."""
        return project_path(self._setting("dataset_config", "./datasets.json"), self.root)

    @property
    def sources(self) -> list[str]:
        """Source names the project uses (``sources``; older projects call it ``datasets``)."""
        value = self.settings.get("sources", self.settings.get("datasets"))
        if value is None:
            raise DatasetError(f"{self._settings_file}: no 'sources' setting naming the dataset sources to use")
        return [value] if isinstance(value, str) else list(value)

    @property
    def models_dir(self) -> str:
        return project_path(self.settings.get("models_dir", "./models"), self.root)

    @property
    def eval_dir(self) -> str:
        return project_path(self.settings.get("eval_dir", "./eval"), self.root)

    def dataset(
        self,
        tile_px: int | None = None,
        tile_um: int | str | None = None,
        *,
        sources: str | Sequence[str] | None = None,
        **kwargs,
    ):
        """The project's Dataset at this tile size: its dataset config, its sources (unless ``sources`` names
        others) and its annotations (unless ``annotations=`` is given). Other keyword arguments go to
        :class:`~slidetiles.Dataset` (``filters``, ``filter_blank``, ``min_tiles``, ``jobs``...)."""
        if "annotations" not in kwargs:
            annotations = self.annotations
            if not os.path.isfile(annotations):
                raise DatasetError(
                    f"{self._settings_file}: annotations file {annotations} (setting "
                    f"{self.settings.get('annotations')!r}) not found; create it or pass annotations="
                )
            kwargs["annotations"] = annotations
        config = kwargs.pop("config", self.dataset_config)
        return Dataset(
            config, sources if sources is not None else self.sources, tile_px=tile_px, tile_um=tile_um, **kwargs
        )

    def __repr__(self) -> str:
        return f"Project(root={self.root!r})"


def load_project(path: str | os.PathLike) -> Project:
    """Open an existing Slideflow project folder (its ``settings.json``), read-only.

    Example:
        >>> P = load_project('/project/path')  # doctest: +SKIP
        >>> dataset = P.dataset(tile_px=299, tile_um='10x')  # doctest: +SKIP
    """
    return Project(path)
