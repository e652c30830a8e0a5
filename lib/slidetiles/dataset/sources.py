"""Dataset sources: the ``datasets.json`` config (or the same structure in YAML) and their label folders.

A source is a set of folders (``slides``, ``roi``, ``tiles``, ``tfrecords``), any of which may be missing. The
TFRecords of a source at a given tile size live in ``<tfrecords>/<label>/``, with ``label`` made from the tile
size by :func:`slidetiles.tile_size.tile_label` exactly as Slideflow names its folders, so existing Slideflow
trees open unchanged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import yaml

from slidetiles.errors import DatasetError

#: The folders a source may name, in the order Slideflow's summary shows them.
SOURCE_KEYS = ("slides", "roi", "tiles", "tfrecords")
#: Name of the single source made from paths given directly (Slideflow uses the same name).
DIRECT_SOURCE = "dataset"


@dataclass(frozen=True)
class Source:
    """One dataset source: a name and its folders (None where not configured)."""

    name: str
    slides: str | None = None
    roi: str | None = None
    tiles: str | None = None
    tfrecords: str | None = None

    def folders(self) -> dict[str, str | None]:
        """``{'slides': ..., 'roi': ..., 'tiles': ..., 'tfrecords': ...}``, the shape of one datasets.json entry."""
        return {key: getattr(self, key) for key in SOURCE_KEYS}

    def tfrecord_dir(self, label: str | None) -> str | None:
        """Folder holding this source's TFRecords at ``label`` (the tfrecords folder itself when no label)."""
        if not self.tfrecords:
            return None
        return os.path.join(self.tfrecords, label) if label else self.tfrecords


def read_sources_config(path: str | os.PathLike) -> dict:
    """Load a sources config file: JSON (Slideflow's ``datasets.json``) or YAML (``.yaml``/``.yml``)."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise DatasetError(f"{path}: sources config file not found") from None
    try:
        if path.lower().endswith((".yaml", ".yml")):
            return yaml.safe_load(text) or {}
        return json.loads(text)
    except Exception as exc:  # json and yaml parse errors share no base class
        raise DatasetError(f"{path}: cannot parse the sources config ({exc})") from None


def _as_folder(value, where: str, name: str, key: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, os.PathLike):
        value = os.fsdecode(os.fspath(value))
    if not isinstance(value, str):
        raise DatasetError(f"{where}: source {name!r} has {key}={value!r}; each folder must be a path or null")
    if "\x00" in value:
        # os functions would raise a bare "embedded null byte" ValueError naming neither the source nor the key.
        raise DatasetError(f"{where}: source {name!r} has {key}={value!r}, which contains a NUL byte; no path can")
    return value


def parse_sources(config: Mapping, where: str = "<dict>") -> dict[str, Source]:
    """``{name: Source}`` from the datasets.json structure, checking its shape.

    Keys other than slides/roi/tiles/tfrecords are ignored (Slideflow writes none, but hand-edited configs may
    carry notes); a source that is not a mapping is an error naming it.
    """
    if not isinstance(config, Mapping):
        raise DatasetError(
            f"{where}: a sources config is a mapping of source name -> {{slides, roi, tiles, tfrecords}}, "
            f"found {type(config).__name__}"
        )
    out = {}
    for name, entry in config.items():
        if not isinstance(entry, Mapping):
            raise DatasetError(
                f"{where}: source {name!r} must map to {{slides, roi, tiles, tfrecords}}, found {entry!r}"
            )
        out[str(name)] = Source(str(name), **{key: _as_folder(entry.get(key), where, name, key) for key in SOURCE_KEYS})
    return out


def select_sources(
    config: str | os.PathLike | Mapping, sources: str | Sequence[str] | None = None
) -> tuple[str | None, list[Source]]:
    """The config file (None for a dict) and the chosen sources, in the order asked (config order by default).

    ``sources=None`` takes every source of the config. A name that is not in it is an error listing the names
    that are (Slideflow only logs a warning and carries on without it).
    """
    if isinstance(config, (str, os.PathLike)):
        config_path: str | None = os.fspath(config)
        parsed = parse_sources(read_sources_config(config_path), config_path)
    else:
        config_path = None
        parsed = parse_sources(config)
    where = config_path or "the sources config"
    if sources is None:
        names = list(parsed)
    else:
        names = [sources] if isinstance(sources, str) else list(sources)
        unknown = [n for n in names if n not in parsed]
        if unknown:
            raise DatasetError(
                f"{where}: no source named {', '.join(map(repr, unknown))}; it defines {sorted(parsed) or 'none'}"
            )
        if len(set(names)) != len(names):
            raise DatasetError(f"sources={names!r} names a source twice")
    if not names:
        raise DatasetError(f"{where}: defines no sources")
    return config_path, [parsed[n] for n in names]


def source_from_paths(slides=None, roi=None, tiles=None, tfrecords=None) -> Source:
    """The single source of a Dataset made directly from paths."""
    where = "Dataset(...)"
    return Source(
        DIRECT_SOURCE,
        slides=_as_folder(slides, where, DIRECT_SOURCE, "slides"),
        roi=_as_folder(roi, where, DIRECT_SOURCE, "roi"),
        tiles=_as_folder(tiles, where, DIRECT_SOURCE, "tiles"),
        tfrecords=_as_folder(tfrecords, where, DIRECT_SOURCE, "tfrecords"),
    )


def roi_files(sources: Sequence[Source]) -> dict[str, str]:
    """``{slide: <roi>/<slide>.csv}`` over the sources' ROI folders; for a slide in several, the first source's."""
    found: dict[str, str] = {}
    for source in sources:
        if not source.roi or not os.path.isdir(source.roi):
            continue
        with os.scandir(source.roi) as it:
            for entry in sorted(it, key=lambda e: e.name):
                if entry.name.lower().endswith(".csv") and entry.is_file():
                    found.setdefault(entry.name[:-4], os.path.join(source.roi, entry.name))
    return found
