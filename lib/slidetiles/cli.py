"""The ``slidetiles`` command line: ``inspect``, ``index``, ``verify`` and ``write``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor

from tqdm import tqdm

from slidetiles.errors import SlidetilesError
from slidetiles.io import tfrecord2idx
from slidetiles.io.reader import verify_tfrecord
from slidetiles.io.text_index import create_text_index
from slidetiles.io.tiles import DEFAULT_COORD_PATTERN, write_tfrecords_multi, write_tfrecords_single
from slidetiles.tfrecord import TFRecord

TFRECORD_SUFFIXES = (".tfrecords", ".tfrecord")


def expand_tfrecords(targets: Iterable[str]) -> list[str]:
    """Files as given, plus every ``*.tfrecords`` under each folder (recursively), sorted per folder."""
    found: list[str] = []
    for target in targets:
        if os.path.isdir(target):
            for root, dirs, files in os.walk(target):
                dirs.sort()
                found.extend(os.path.join(root, f) for f in sorted(files) if f.endswith(TFRECORD_SUFFIXES))
        elif os.path.exists(target):
            found.append(target)
        else:
            raise FileNotFoundError(f"{target}: no such file or folder")
    return found


def _pool_map(function, items: list, jobs: int, description: str):
    """Apply ``function`` to ``items`` in ``jobs`` processes with a progress bar, yielding results in order."""
    bar = tqdm(total=len(items), desc=description, unit="file", disable=None, file=sys.stderr)
    try:
        if jobs <= 1 or len(items) <= 1:
            for item in items:
                yield function(item)
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                for result in pool.map(function, items, chunksize=max(1, min(64, len(items) // (jobs * 8)))):
                    yield result
                    bar.update()
    finally:
        bar.close()


# -- index -----------------------------------------------------------------------------------------------------------
def _index_one(args: tuple[str, bool, str]) -> tuple[str, str | None]:
    path, force, fmt = args
    try:
        if fmt == "text":
            create_text_index(path)
        elif force:
            tfrecord2idx.create_index(path)
        else:
            tfrecord2idx.read_index(path, create=True)
        return path, None
    except (SlidetilesError, OSError) as exc:
        return path, str(exc)


def cmd_index(ns) -> int:
    paths = expand_tfrecords(ns.targets)
    items = [(p, ns.force, ns.format) for p in paths]
    failures = [(path, error) for path, error in _pool_map(_index_one, items, ns.jobs, "indexing") if error]
    for _, error in failures:
        print(f"error: {error}", file=sys.stderr)
    kind = " (text .tfindex)" if ns.format == "text" else ""
    print(f"{len(paths) - len(failures)} of {len(paths)} TFRecord(s) indexed{kind}")
    return 1 if failures else 0


# -- verify ----------------------------------------------------------------------------------------------------------
def _verify_one(path: str):
    return verify_tfrecord(path)


def cmd_verify(ns) -> int:
    paths = expand_tfrecords(ns.targets)
    bad = []
    records = 0
    for report in _pool_map(_verify_one, paths, ns.jobs, "verifying"):
        records += report.records
        if not report.ok:
            bad.append(report)
    for report in bad:
        print(f"BAD {report.path}")
        for error in report.errors:
            where = f"record {error.record} at byte {error.offset}" if error.offset is not None else "file"
            print(f"    {where}: {type(error).__name__}: {error.detail}")
    print(f"{len(paths) - len(bad)} of {len(paths)} TFRecord(s) OK, {records} good record(s)")
    return 1 if bad else 0


# -- inspect ---------------------------------------------------------------------------------------------------------
def cmd_inspect(ns) -> int:
    tfr = TFRecord(ns.file, create_index=not ns.no_index)
    locations = tfr.locations
    print(f"file:         {tfr.path}")
    print(f"size:         {os.path.getsize(tfr.path):,} bytes")
    print(f"index:        {tfr.index.path or '(in memory)'}")
    print(f"records:      {len(tfr)}")
    print(f"fields:       {', '.join(tfr.fields)}")
    print(f"image format: {tfr.img_format}")
    if len(tfr):
        print(f"slide:        {tfr[0].get('slide')}")
    if locations is None:
        print("locations:    none (records carry no loc_x/loc_y)")
    else:
        shown = ", ".join(f"({x}, {y})" for x, y in locations[: ns.show])
        print(f"locations:    {shown}{', ...' if len(locations) > ns.show else ''}")
    return 0


# -- write -----------------------------------------------------------------------------------------------------------
def cmd_write(ns) -> int:
    pattern = None if ns.no_locations else (ns.coord_pattern or DEFAULT_COORD_PATTERN)
    options = dict(coord_pattern=pattern, check_images=not ns.no_check)
    if ns.slide:
        path = write_tfrecords_single(ns.input, ns.output, ns.filename or ns.slide, ns.slide, **options)
        print(path)
    else:
        for path in write_tfrecords_multi(ns.input, ns.output, **options).values():
            print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slidetiles", description="Slideflow-compatible TFRecords of whole-slide-image tiles."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    jobs_default = os.cpu_count() or 1

    p = commands.add_parser("inspect", help="fields, image format, record count and first locations of a TFRecord")
    p.add_argument("file")
    p.add_argument("--show", type=int, default=5, help="how many locations to print (default 5)")
    p.add_argument("--no-index", action="store_true", help="do not write an index if there is none")
    p.set_defaults(run=cmd_inspect)

    p = commands.add_parser("index", help="build missing or stale <slide>.index.npz files (or text .tfindex ones)")
    p.add_argument("targets", nargs="+", metavar="FILE|DIR")
    p.add_argument("--force", action="store_true", help="rebuild every index, also current and foreign ones")
    p.add_argument(
        "--format",
        choices=("npz", "text"),
        default="npz",
        help="npz: Slideflow's <slide>.index.npz (default); text: the tfrecord package's 'start length' lines in "
        "<slide>.tfindex, always rewritten, leaving the .index.npz alone",
    )
    p.add_argument("-j", "--jobs", type=int, default=jobs_default, help=f"processes (default {jobs_default})")
    p.set_defaults(run=cmd_index)

    p = commands.add_parser("verify", help="check every CRC and record; exit 1 listing bad files and offsets")
    p.add_argument("targets", nargs="+", metavar="FILE|DIR")
    p.add_argument("-j", "--jobs", type=int, default=jobs_default, help=f"processes (default {jobs_default})")
    p.set_defaults(run=cmd_verify)

    p = commands.add_parser("write", help="tile images -> TFRecords (one per slide sub-folder, or one with --slide)")
    p.add_argument("input", help="folder of slide sub-folders, or of tiles with --slide")
    p.add_argument("output", help="destination folder of the TFRecords")
    p.add_argument("--slide", help="write one TFRecord of the tiles directly in INPUT for this slide")
    p.add_argument("--filename", help="TFRecord name with --slide (default: the slide name)")
    p.add_argument("--coord-pattern", help="regex with groups (?P<x>..) (?P<y>..) matched against tile names")
    p.add_argument("--no-locations", action="store_true", help="store no loc_x/loc_y")
    p.add_argument("--no-check", action="store_true", help="skip the per-tile image check")
    p.set_defaults(run=cmd_write)
    return parser


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        return ns.run(ns)
    except (SlidetilesError, OSError) as exc:
        # Bad input or a file problem: one line naming it. Anything else is a bug and keeps its traceback.
        print(f"slidetiles {ns.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
