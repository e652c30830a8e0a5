"""Acceptance: every example of Slideflow's TFRecord and Dataset documentation runs with ``import slidetiles as sf``.

The examples are taken from the seed texts themselves (Slideflow's "TFRecords: Reading and Writing" and "Datasets"
pages, as text, in ``SEEDS_DIR``): the ``>>>`` sessions with the output lines the page shows after them, and the code
blocks, recognised as lines of Python that import, assign, call or loop (see :func:`extract`). What the pages
leave to the reader is written down here, in small explicit tables that the test checks are all used:

- ``PATHS``: the placeholder paths (``'/path/to/tfrecord'``...) -> files of a small real project built here;
- ``SUBSTITUTIONS``: ``import slideflow as sf`` -> ``import slidetiles as sf``, and the two elisions (``...``);
- ``CONTEXT``: names a page uses without defining them (``project``, ``Dataset``);
- ``COMPLETIONS``: the ends of the blocks the pages cut short (``dataset = sf.Dataset(``), completed minimally
  from the prose around them;
- ``OUTPUTS``: a check for every output the pages show. Facts that do not depend on the data (``tfr.fields``,
  ``'jpeg'``, ``<class 'bytes'>``, the record layout) are compared with the page's text; counts, paths and
  coordinates are compared with the data built here, which is laid out so that the page's coordinates exist
  (a tile at (768, 256), then (768, 512)).

The project is small (12 slides of 20-60 tiny JPEG tiles) so the whole page runs in seconds.
"""

from __future__ import annotations

import ast
import codeop
import contextlib
import io
import itertools
import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import slidetiles
from slidetiles.io import tfrecord2idx
from slidetiles.io.writer import TFRecordWriter

# The pages live beside the checkout (../shared/seeds), not in it: they are Slideflow's GPL-3.0 documentation.
SEEDS_DIR = Path(os.environ.get("SLIDETILES_SEEDS_DIR", Path(__file__).resolve().parents[2] / "shared" / "seeds"))
SEED_FILES = ("tfrecords.txt", "datasets.txt")


# -- extracting the examples from the seed text ------------------------------------------------------------------
def _status(source: str) -> str:
    """'complete', 'incomplete' (an open bracket or block) or 'error' for a piece of Python source."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escape sequences in prose
        try:
            ast.parse(source)
            return "complete"
        except SyntaxError:
            pass
        try:
            return "incomplete" if codeop.compile_command(source + "\n", symbol="exec") is None else "complete"
        except (SyntaxError, ValueError, OverflowError):
            return "error"


_CALL_START = re.compile(r"^([A-Za-z_][\w.]*(\s*,\s*[A-Za-z_]\w*)*\s*=\s*)?[A-Za-z_][\w.]*\(")
_FOR_START = re.compile(r"^for\s.+:\s*$")

#: Output of ``Dataset.summary()`` on the Datasets page that reads as a Python call (pandas' repr of the columns).
NOT_CODE = {"Index(['patient', 'subtype', 'site', 'slide'],"}


def starts_code(line: str) -> bool:
    """A line that opens a code block: a comment, or a statement that imports, assigns, calls or loops.

    Headings such as "TFRecords: Reading and Writing" parse as Python (an annotation) but do none of these.
    """
    text = line.strip()
    if not text or line[:1].isspace() or text in NOT_CODE:
        return False
    if text.startswith("#"):
        return True
    status = _status(text)
    if status == "complete":
        node = ast.parse(text).body[0]
        return isinstance(node, (ast.Import, ast.ImportFrom, ast.Assign)) or (
            isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
        )
    return status == "incomplete" and bool(_CALL_START.match(text) or _FOR_START.match(text))


def extract(text: str) -> list[dict]:
    """The examples of a seed page, in order.

    ``{'kind': 'repl', 'source', 'output': [lines], 'line'}`` for each ``>>>`` statement (with its ``...``
    continuation lines and the lines shown after it up to a blank line), and ``{'kind': 'block', 'source',
    'complete', 'line'}`` for each code block: from a line that :func:`starts_code` through every following line
    (blank lines included) that keeps it valid or unfinished Python; a block still unfinished at the first line of
    prose is one the page cut short.
    """
    lines = text.splitlines()
    items: list[dict] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(">>> "):
            start, source = i + 1, [line[4:]]
            i += 1
            while i < len(lines) and lines[i].startswith("... "):
                source.append(lines[i][4:])
                i += 1
            output = []
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(">>> "):
                output.append(lines[i])
                i += 1
            items.append({"kind": "repl", "source": "\n".join(source), "output": output, "line": start})
            continue
        if not starts_code(line):
            i += 1
            continue
        taken, pending, status = [line], [], _status(line)
        j = i + 1
        while j < len(lines) and not lines[j].startswith(">>> ") and lines[j].strip() not in NOT_CODE:
            nxt = lines[j]
            j += 1
            if not nxt.strip():
                pending.append(nxt)
                continue
            trial = _status("\n".join(taken + pending + [nxt]))
            if trial == "error" or (status == "complete" and not starts_code(nxt) and not nxt[:1].isspace()):
                break
            taken += pending + [nxt]
            pending, status = [], trial
        items.append({"kind": "block", "source": "\n".join(taken), "complete": status == "complete", "line": i + 1})
        i += len(taken)
    return items


# -- what the pages leave to the reader ---------------------------------------------------------------------------
#: Placeholder path literals of each page -> keys of the ``seed_project`` fixture.
PATHS = {
    "tfrecords.txt": {
        "'/path/to/images'": "images",
        "'/path/to/destination'": "destination",
        "'/path/to/nested_images'": "nested_images",
        "'/path/to/tfrecord'": "slide00",
        "'/path/to/tfrecords'": "slide01",  # here one TFRecord (`tfr = '/path/to/tfrecords'`), not a folder
        "'/path/to/tfrecord1'": "slide02",
        "'/path/to/tfrecord2'": "slide03",
    },
    "datasets.txt": {
        "'/project/path'": "project",
        # The two completions below name these paths; the first is the configuration file the page's summary shows.
        "'/mnt/data/datasets.json'": "datasets_json",
        "'/project/path/annotations.csv'": "annotations_csv",
        "'/path/to/slides'": "slides",
        "'/path/to/tfrecords'": "tfrecords",
    },
}

#: Code text -> what runs instead (applied before the paths).
SUBSTITUTIONS = {
    "tfrecords.txt": {"import slideflow as sf": "import slidetiles as sf"},
    "datasets.txt": {
        "import slideflow as sf": "import slidetiles as sf",
        # "df = pd.DataFrame(...)": the page's clinical annotations; ours come from the project's CSV.
        "pd.DataFrame(...)": "pd.DataFrame(pd.read_csv('/project/path/annotations.csv'))",
        # "Dataset(..., filters=...)": the elided arguments are those of the project's dataset above.
        "Dataset(...,": "Dataset(config='/mnt/data/datasets.json', sources=['Source1'], "
        "annotations='/project/path/annotations.csv', tile_px=299, tile_um='10x',",
    },
}

#: Truncated blocks, by (their last line, occurrence) -> the lines that finish them.
COMPLETIONS = {
    "datasets.txt": {
        # "passing in the project dataset configuration file to the config argument, and a path to the annotations
        # file to annotations" (and the tile size of the P.dataset call above it).
        ("dataset = sf.Dataset(", 0): "    config='/mnt/data/datasets.json',\n    sources=['Source1'],\n"
        "    annotations='/project/path/annotations.csv',\n    tile_px=299,\n    tile_um='10x',\n)",
        # "supplying paths to slides, destination for image tiles, and clinical annotations": the arguments the
        # page lists (tile_px, tile_um, slides, tfrecords, annotations), with the DataFrame made just above.
        ("dataset = sf.Dataset(", 1): "    slides='/path/to/slides',\n    tfrecords='/path/to/tfrecords',\n"
        "    annotations=df,\n    tile_px=299,\n    tile_um='10x',\n)",
        ("    splits='splits.json'      # Where to save/load crossfold splits", 0): ")",
        # The loop's body is left out; we keep the folds to check them.
        ("for train, test in dataset.kfold_split(k=5, labels='subtype'):", 0): "    folds.append((train, test))",
    },
}


def _context(project: dict) -> dict[str, dict]:
    """Names each page uses without defining them."""
    return {
        # Every code example on the TFRecords page assumes `import slideflow as sf` and a loaded `project`.
        "tfrecords.txt": {"sf": slidetiles, "project": slidetiles.load_project(project["project"])},
        # The Datasets page writes `Dataset(...)` for `sf.Dataset` in its filter example.
        "datasets.txt": {"Dataset": slidetiles.Dataset, "folds": []},
    }


# -- the small project the examples run on ----------------------------------------------------------------------------
N_SLIDES = 12
SHORT_SLIDE = "slide10"  # 20 tiles: dropped by the page's `filter(min_tiles=50)`
UNKNOWN_HPV = "slide11"  # HPV_status 'unknown': dropped by the page's `filters={'HPV_status': [...]}`


def tile_count(slide: str) -> int:
    return 20 if slide == SHORT_SLIDE else 60


def location(i: int) -> tuple[int, int]:
    """Tile centres on a 256 px grid, column by column from (768, 256): the page's first two locations."""
    return 768 + 256 * (i // 8), 256 + 256 * (i % 8)


@pytest.fixture(scope="module")
def seed_project(tmp_path_factory, jpeg_tiles):
    """A Slideflow project folder: 12 slides (5+5 of subtypes A/B after the page's filters), 299px_10x TFRecords
    with indexes, annotations, datasets.json with one source 'Source1'; and loose tile folders for the writers."""
    root = tmp_path_factory.mktemp("seeds")
    slides = [f"slide{k:02d}" for k in range(N_SLIDES)]
    tfr_dir = root / "tfrecords" / "299px_10x"
    tfr_dir.mkdir(parents=True)
    out = {"root": root, "tiles": jpeg_tiles, "slide_names": slides}
    for k, slide in enumerate(slides):
        path = tfr_dir / f"{slide}.tfrecords"
        with TFRecordWriter(path) as writer:
            for i in range(tile_count(slide)):
                writer.write_tile(jpeg_tiles[(i + k) % len(jpeg_tiles)], slide, *location(i))
        tfrecord2idx.create_index(path)
        out[slide] = str(path)
    project = root / "project"
    project.mkdir()
    annotations = pd.DataFrame(
        {
            "patient": [f"pt{k:02d}" for k in range(N_SLIDES)],
            "subtype": ["A" if k % 2 == 0 else "B" for k in range(N_SLIDES)],
            "site": [f"site{k % 4}" for k in range(N_SLIDES)],
            "slide": slides,
            "HPV_status": ["unknown" if s == UNKNOWN_HPV else ("negative" if k % 3 else "positive")
                           for k, s in enumerate(slides)],
        }
    )
    annotations.to_csv(project / "annotations.csv", index=False)
    config = {"Source1": {"slides": str(root / "slides"), "roi": str(root / "roi"), "tiles": str(root / "tiles"),
                          "tfrecords": str(root / "tfrecords")}}
    (project / "datasets.json").write_text(json.dumps(config))
    settings = {"name": "SeedProject", "annotations": "./annotations.csv", "dataset_config": "./datasets.json",
                "sources": ["Source1"], "models_dir": "./models", "eval_dir": "./eval"}
    (project / "settings.json").write_text(json.dumps(settings))
    (root / "slides").mkdir()
    images = root / "images"
    images.mkdir()
    for i in range(4):
        (images / f"loose-{location(i)[0]}-{location(i)[1]}.jpg").write_bytes(jpeg_tiles[i])
    for slide in ("nestedA", "nestedB"):
        (root / "nested_images" / slide).mkdir(parents=True)
        for i in range(3):
            (root / "nested_images" / slide / f"{slide}-{location(i)[0]}-{location(i)[1]}.jpg").write_bytes(jpeg_tiles[i])
    out.update(
        project=str(project), datasets_json=str(project / "datasets.json"),
        annotations_csv=str(project / "annotations.csv"), slides=str(root / "slides"),
        tfrecords=str(root / "tfrecords"), images=str(images), nested_images=str(root / "nested_images"),
        destination=str(root / "destination"),
    )
    return out


# -- checks of the outputs the pages show -------------------------------------------------------------------------
def _literal(shown: str):
    return ast.literal_eval(shown)


def check_literal(value, printed, ns, data, shown):
    assert value == _literal(shown)


def check_printed(value, printed, ns, data, shown):
    assert printed.rstrip("\n") == shown


def check_prefix(value, printed, ns, data, shown):
    # "[(768, 256), (768, 512), ...]": the items shown, then more.
    expected = _literal(shown)
    assert expected[-1] is Ellipsis
    assert value[: len(expected) - 1] == expected[:-1] and len(value) == tile_count("slide00")


def check_same_types(value, shown) -> dict:
    """The page's record layout: the same keys, each value of the type shown."""
    expected = _literal(shown)
    assert list(value) == list(expected)
    for key, example in expected.items():
        assert type(value[key]) is type(example), key
    return expected


def check_tfr_record(value, printed, ns, data, shown):
    # {'image_raw': b'...', 'slide': 'SLIDE_NAME', 'loc_x': 0, 'loc_y': 0}: types from the page, values ours.
    check_same_types(value, shown)
    assert value == {"image_raw": data["tiles"][0], "slide": "slide00", "loc_x": 768, "loc_y": 256}


def check_record_by_xy(value, printed, ns, data, shown):
    # ('SLIDE_NAME', b'...')
    assert [type(v) for v in value] == [type(v) for v in _literal(shown)]
    assert value == ("slide00", data["tiles"][0])


def check_decoded(value, printed, ns, data, shown):
    # The page shows the torch backend's tensor ("according to the active backend"). slidetiles has no backend:
    # decode_image gives a uint8 HWC numpy array unless asked format='torch' / 'tf' (README, "The TFRecord
    # library"). The shape and dtype are the facts compared; the page's 256 px is its own tile size.
    match = re.fullmatch(r"<torch\.Tensor shape=\((\d+), (\d+), 3\) dtype=torch\.uint8>?", shown)
    assert match is not None
    assert isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.shape == (64, 64, 3)
    torch = pytest.importorskip("torch")
    tensor = slidetiles.io.decode_image(ns["image"], format="torch")
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.uint8 and tuple(tensor.shape) == value.shape


def check_loader_record(value, printed, ns, data, shown):
    # {'image_raw': <np.ndarray>, 'slide': <np.ndarray>, 'loc_x': [0], 'loc_y': [0]}, shown after
    # `record = next(iter(loader))`: the record's layout.
    expected = _literal(shown.replace("<np.ndarray>", "None"))
    record = ns["record"]
    assert list(record) == list(expected)
    for key, example in expected.items():
        if example is None:
            assert isinstance(record[key], np.ndarray) and record[key].dtype == np.uint8
        else:  # a one-item list of an int: record['loc_x'][0]
            assert len(record[key]) == len(example) and isinstance(record[key][0], (int, np.integer))
    assert bytes(record["slide"]).decode("utf-8") in data["slide_names"]
    assert (int(record["loc_x"][0]), int(record["loc_y"][0])) in {location(i) for i in range(60)}


def check_manifest(value, printed, ns, data, shown):
    # {'/path/to/tfrecords1': {'total': 1000, 'clipped': 512}, ...}: per TFRecord, its total and clipped tiles.
    keys = re.findall(r"\{'(\w+)': \d+, '(\w+)': \d+\}", shown)
    assert keys and all(pair == ("total", "clipped") for pair in keys)
    assert value == {data[s]: {"total": tile_count(s), "clipped": tile_count(s)} for s in data["slide_names"]}


OUTPUTS = {
    "['image_raw', 'slide', 'loc_x', 'loc_y']": check_literal,
    "'jpeg'": check_literal,
    "<class 'bytes'>": check_printed,
    "1000": lambda value, *args: value == tile_count("slide00") or pytest.fail(f"tfr.length = {value}"),
    "[(768, 256), (768, 512), ...]": check_prefix,
    "941": lambda value, *args: value == N_SLIDES or pytest.fail(f"len(tfrecords) = {value}"),
    "'/path/to/tfrecords1'": lambda value, p, ns, data, s: value == data["slide00"] or pytest.fail(value),
    "284114": lambda value, *args: value == 11 * 60 + 20 or pytest.fail(f"num_tiles = {value}"),
    "{'/path/to/tfrecords1': {'total': 1000, 'clipped': 512},\n '/path/to/tfrecords2': {'total': 2000, "
    "'clipped': 512},\n ...}": check_manifest,
    "{'image_raw': b'...', 'slide': 'SLIDE_NAME', 'loc_x': 0, 'loc_y': 0}": check_tfr_record,
    "('SLIDE_NAME', b'...')": check_record_by_xy,
    "<torch.Tensor shape=(256, 256, 3) dtype=torch.uint8": check_decoded,
    "{'image_raw': <np.ndarray>, 'slide': <np.ndarray>, 'loc_x': [0], 'loc_y': [0]}": check_loader_record,
}

#: Labels of the summary table the TFRecords page shows after `dataset.summary()`.
SUMMARY_LABELS = ("Configuration file:", "Tile size (px):", "Tile size (um):", "Slides:", "Patients:", "Filters:",
                  "Min Tiles:", "Sources:", "Number of tiles in TFRecords:", "Annotation columns:")


# -- running a page -------------------------------------------------------------------------------------------------
def seed_text(name: str) -> str:
    path = SEEDS_DIR / name
    if not path.is_file():
        if os.environ.get("SLIDETILES_REQUIRE_SEEDS") == "1":
            raise FileNotFoundError(f"{path}: seed page missing (set SLIDETILES_SEEDS_DIR)")
        pytest.skip(f"{path} not found; set SLIDETILES_SEEDS_DIR to the folder of the seed pages")
    return path.read_text(encoding="utf-8")


def prepare(name: str, item: dict, data: dict, used: set, seen_truncated: dict) -> str:
    """The code that runs for one example: substitutions, completion, then paths."""
    source = item["source"]
    if item["kind"] == "block" and not item["complete"]:
        last = source.rstrip("\n").splitlines()[-1]
        key = (last, seen_truncated.setdefault(last, 0))
        seen_truncated[last] += 1
        completion = COMPLETIONS.get(name, {}).get(key)
        assert completion is not None, f"{name} line {item['line']}: a block cut short, with no completion: {key}"
        used.add(("completion", key))
        source = source + "\n" + completion
    for old, new in SUBSTITUTIONS[name].items():
        if old in source:
            used.add(("substitution", old))
            source = source.replace(old, new)
    for placeholder, key in PATHS[name].items():
        if placeholder in source:
            used.add(("path", placeholder))
            source = source.replace(placeholder, repr(data[key]))
    return source


def run_page(name: str, data: dict) -> tuple[dict, str]:
    """Run every example of a page in one namespace, in order, checking each output shown. Returns the namespace
    and everything the examples printed."""
    items = extract(seed_text(name))
    ns = {"__name__": "__seed__"}
    ns.update(_context(data)[name])
    used: set = set()
    seen_truncated: dict = {}
    printed_all = io.StringIO()
    for item in items:
        source = prepare(name, item, data, used, seen_truncated)
        where = f"{name} line {item['line']}: {item['source']!r}"
        tree = ast.parse(source)
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                if len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr):
                    value = eval(compile(ast.Expression(tree.body[0].value), where, "eval"), ns)
                else:
                    exec(compile(tree, where, "exec"), ns)
                    value = None
        except Exception as exc:
            raise AssertionError(f"{where} raised {type(exc).__name__}: {exc}\n--- ran:\n{source}") from exc
        printed_all.write(printed.getvalue())
        if item["kind"] == "repl" and item["output"]:
            shown = "\n".join(item["output"])
            check = OUTPUTS.get(shown)
            assert check is not None, f"{where}: no check for the output the page shows: {shown!r}"
            used.add(("output", shown))
            try:
                check(value, printed.getvalue(), ns, data, shown)
            except AssertionError as exc:
                raise AssertionError(f"{where}: shows {shown!r}, got {value!r}") from exc
    expected = {("path", p) for p in PATHS[name]} | {("substitution", s) for s in SUBSTITUTIONS[name]}
    expected |= {("completion", k) for k in COMPLETIONS.get(name, {})}
    if name == "tfrecords.txt":
        expected |= {("output", o) for o in OUTPUTS}
    assert expected <= used, f"{name}: table entries the page no longer needs: {sorted(expected - used)}"
    return ns, printed_all.getvalue()


def test_extraction_finds_every_example():
    # The seed pages' examples, counted by hand: a change in the pages or in `extract` shows up here.
    tfrecords = extract(seed_text("tfrecords.txt"))
    datasets = extract(seed_text("datasets.txt"))
    assert [i["kind"] for i in tfrecords].count("block") == 3
    assert [i["kind"] for i in tfrecords].count("repl") == 35
    assert sum(1 for i in tfrecords if i["kind"] == "repl" and i["output"]) == 14  # 13 distinct: one shown twice
    assert [i["kind"] for i in datasets] == ["block"] * 9
    assert [i["complete"] for i in datasets] == [True, False, False, True, True, True, True, False, False]
    # Every `>>>` line of the pages is in a REPL example, and no line of prose became code.
    for name, items in (("tfrecords.txt", tfrecords), ("datasets.txt", datasets)):
        text = seed_text(name)
        assert sum(1 for i in items if i["kind"] == "repl") == text.count("\n>>> ")
        for item in items:
            if item["kind"] == "block":
                assert _status(item["source"]) != "error"


def test_tfrecords_page_runs(seed_project):
    ns, printed = run_page("tfrecords.txt", seed_project)
    # The writers of "Creating TFRecords" wrote their files (one TFRecord of the loose images, one per sub-folder).
    destination = Path(seed_project["destination"])
    assert sorted(p.name for p in destination.glob("*.tfrecords")) == ["filename.tfrecords", "nestedA.tfrecords",
                                                                       "nestedB.tfrecords"]
    single = slidetiles.TFRecord(destination / "filename.tfrecords")
    assert len(single) == 4 and single[0]["slide"] == "slide"
    # dataset.summary() printed the tables the page shows, with this project's values.
    text = seed_text("tfrecords.txt")
    for label in SUMMARY_LABELS:
        assert label in text and label in printed, label
    assert seed_project["datasets_json"] in printed and "299px_10x" in printed
    # The loop of "Reading from a single TFRecord" ended on the file's last record.
    assert ns["slide"] == "slide01" and ns["image"].shape == (64, 64, 3)
    # The last `loader` is the weighted multi loader: infinite (Slideflow's default), over the two files.
    sample = list(itertools.islice(ns["loader"], 3 * 60))
    assert {bytes(r["slide"]) for r in sample} == {b"slide02", b"slide03"}


def test_datasets_page_runs(seed_project, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the page's split writes 'splits.json' in the working folder
    ns, _ = run_page("datasets.txt", seed_project)
    kept = [f"slide{k:02d}" for k in range(10)]  # the short slide and the unknown HPV status are filtered out
    assert ns["P"].name == "SeedProject"
    assert ns["dataset"].slides() == kept
    # clip(500) after balance('HPV_status').clip(50): every slide has its 60 tiles again, the balancing stays.
    assert ns["dataset"].manifest() == {seed_project[s]: {"total": 60, "clipped": 60} for s in kept}
    train, test = ns["train_dataset"], ns["test_dataset"]
    assert sorted(train.slides() + test.slides()) == kept and len(test.slides()) == 2
    assert (tmp_path / "splits.json").is_file()
    folds = ns["folds"]
    assert len(folds) == 5
    held_out = [s for _, test_fold in folds for s in test_fold.slides()]
    assert sorted(held_out) == kept  # each slide validated once
    for train_fold, test_fold in folds:
        assert not set(train_fold.slides()) & set(test_fold.slides())
