"""Plain helpers shared by the tests (importable as `helpers`: pytest puts tests/ on sys.path); fixtures live in
conftest.py.

The Dataset tests' cohort (label folder ``299px_10x`` under ``tfrecords/``), with every expectation in the tests
computed by hand from this table:

    slide patient site label  flag    score tiles
    s1    p1      A    tumor  'FALSE' '0'   10
    s2    p1      A    tumor  'TRUE'  '1.5' 30
    s3    p2      B    normal ''      ' '    5
    s4    p3      B    normal 'FALSE' '0'   20
    s5    p4      C    tumor  'unknown' '2'  8
    s6    p4      C    tumor  'TRUE'  '3'    8
    s7    p4      C    tumor  'FALSE' '4'    4
    s8    p4      C    tumor  'TRUE'  '5'    2
    s9    p5      A    normal 'FALSE' '0'    0   (an empty, 0-byte TFRecord)
    s10   p6      B    tumor  'TRUE'  '1'    -   (annotated, no TFRecord)
    x1    -       -    -      -       -      7   (TFRecord without annotation)
"""

import os

import numpy as np
import pandas as pd

from slidetiles.io.tfrecord2idx import save_index
from slidetiles.io.writer import TFRecordWriter


def write_tiles(path, tiles, slide="slide1", locations=True):
    """Write ``tiles`` as tile records; returns the (x, y) written (or None)."""
    locs = [(loc_x(i), 1000 - 7 * i) for i in range(len(tiles))] if locations else None
    with TFRecordWriter(path) as writer:
        for i, tile in enumerate(tiles):
            if locs:
                writer.write_tile(tile, slide, *locs[i])
            else:
                writer.write_tile(tile, slide)
    return locs


def write_corpus(folder, sizes, *, seed: int, px: int, prefix: str = "s"):
    """TFRecords ``<prefix>0.tfrecords``... of ``sizes`` distinct real JPEG tiles each (``px`` square), one slide per
    file named as the file, written by :func:`write_tiles` (record ``i`` at ``loc_x(i)``). Returns (paths, tiles
    per file)."""
    from slidetiles.demo import iter_tiles

    tiles = list(iter_tiles(seed=seed, n=sum(sizes), px=px))
    paths, per_file, start = [], [], 0
    for k, n in enumerate(sizes):
        path = os.path.join(folder, f"{prefix}{k}.tfrecords")
        write_tiles(path, tiles[start : start + n], slide=f"{prefix}{k}")
        paths.append(path)
        per_file.append(tiles[start : start + n])
        start += n
    return paths, per_file


def loc_x(i: int) -> int:
    """The loc_x :func:`write_tiles` writes for record ``i``: tests identify a tile by (slide, loc_x)."""
    return 100 * i + 50


# -- the training loaders' corpus (torch and TensorFlow tests) --------------------------------------------------------
LOADER_SIZES = [7, 13, 1, 30, 4]
LOADER_LABELS = {"s0": "tumor", "s1": "normal", "s2": "tumor", "s3": "stroma", "s4": "normal"}


def all_ids(sources):
    """Every (slide, loc_x) the sources hold (clip respected)."""
    return {(s.slide, loc_x(i)) for s in sources for i in range(s.n_tiles)}


def job_counts(text: str) -> dict[str, int]:
    """The "Job stats" table Snakemake prints before running (or dry-running)."""
    counts = {}
    for line in text.split("Job stats:", 1)[-1].splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[1].isdigit():
            counts[fields[0]] = int(fields[1])
        elif counts and not fields:
            break
    return counts


# -- the Dataset tests' cohort (the table above) ---------------------------------------------------------------------
LABEL = "299px_10x"
#: Smallest payload that still reads as a JPEG (tile counting never decodes it).
TINY_JPEG = b"\xff\xd8\xff\xe0" + bytes(12)

COHORT = [
    # slide, patient, site, label, flag, score, tiles
    ("s1", "p1", "A", "tumor", "FALSE", "0", 10),
    ("s2", "p1", "A", "tumor", "TRUE", "1.5", 30),
    ("s3", "p2", "B", "normal", "", " ", 5),
    ("s4", "p3", "B", "normal", "FALSE", "0", 20),
    ("s5", "p4", "C", "tumor", "unknown", "2", 8),
    ("s6", "p4", "C", "tumor", "TRUE", "3", 8),
    ("s7", "p4", "C", "tumor", "FALSE", "4", 4),
    ("s8", "p4", "C", "tumor", "TRUE", "5", 2),
    ("s9", "p5", "A", "normal", "FALSE", "0", 0),
    ("s10", "p6", "B", "tumor", "TRUE", "1", None),
]
ORPHANS = {"x1": 7}
RETAINED = ["s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8"]
TILES = {row[0]: row[6] for row in COHORT if row[6] is not None}


def write_tfrecord(path, n: int, slide: str | None = None, *, index: bool = True, tiles=None) -> str:
    """A real TFRecord of ``n`` tile records (tiny JPEG-looking payloads unless ``tiles`` are given), with its
    index written as the library writes it. ``n == 0`` makes an empty, 0-byte file."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    slide = slide or os.path.basename(path)[: -len(".tfrecords")]
    if n == 0:
        open(path, "wb").close()
        return path
    with TFRecordWriter(path) as writer:
        for i in range(n):
            image = tiles[i % len(tiles)] if tiles else TINY_JPEG
            writer.write_tile(image, slide, 100 * i, 50)
    if index:
        arr_0, locations = writer.index_arrays()
        save_index(path, arr_0, locations)
    return path


def write_named_records(path, slide: str, n: int) -> str:
    """A TFRecord of ``n`` records whose payload names them (``b"<slide>:<i>"``, at location ``(i, 0)``), indexed:
    for tests of record order, where what matters is which record came, not its pixels."""
    with TFRecordWriter(path) as writer:
        for i in range(n):
            writer.write_tile(f"{slide}:{i}".encode(), slide, i, 0)
    arr_0, locations = writer.index_arrays()
    save_index(path, arr_0, locations)
    return str(path)


def annotations_frame(rows=COHORT) -> pd.DataFrame:
    return pd.DataFrame(
        [r[:6] for r in rows], columns=["slide", "patient", "site", "label", "flag", "score"]
    )[["patient", "slide", "site", "label", "flag", "score"]]


def build_cohort(root, *, index: bool = True, label: str = LABEL) -> dict:
    """Write the cohort under ``root``; returns its paths (tfrecords folder, csv, TFRecord of each slide)."""
    root = os.fspath(root)
    folder = os.path.join(root, "tfrecords", label)
    paths = {}
    for slide, n in {**TILES, **ORPHANS}.items():
        paths[slide] = write_tfrecord(os.path.join(folder, f"{slide}.tfrecords"), n, index=index)
    csv = os.path.join(root, "annotations.csv")
    annotations_frame().to_csv(csv, index=False)
    return {"root": root, "tfrecords": os.path.join(root, "tfrecords"), "csv": csv, "paths": paths, "folder": folder}


def path_of(cohort, slide: str) -> str:
    return cohort["paths"][slide]


# -- split tests -----------------------------------------------------------------------------------------------------
def make_cohort(n_patients=24, n_labels=3, n_sites=6, slides=(1, 2, 3), seed=0):
    """Slide annotations of a fixed cohort, for example-based split tests."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_patients):
        patient = f"TCGA-{i:03d}"
        score = f"{rng.integers(0, 100) / 10}"
        for j in range(slides[i % len(slides)]):
            rows.append({"slide": f"{patient}-{j}", "patient": patient, "subtype": "ABCDEFG"[i % n_labels],
                         "site": f"site{i % n_sites}", "score": score,
                         "fold": f"{1 + i % 4}"})
    return pd.DataFrame(rows)
