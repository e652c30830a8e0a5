"""Tile counts from index files: header-only reads, every index flavour, staleness, parallel builds."""

import os

import numpy as np
import pytest

from helpers import write_tfrecord
from slidetiles import Dataset
from slidetiles.dataset import tilecounts
from slidetiles.dataset.tilecounts import count_tiles, pick_index, quick_head
from slidetiles.errors import DatasetError
from slidetiles.io import tfrecord2idx


def entry(path):
    st = os.stat(path)
    return (str(path), st.st_size, st.st_mtime_ns, tfrecord2idx.find_index(path))


def test_quick_head_reads_our_index(tmp_path):
    path = write_tfrecord(tmp_path / "a.tfrecords", 7)
    index = tfrecord2idx.index_path(path)
    head = quick_head(index)
    full = tfrecord2idx._load_file(index)
    assert head.n == len(full) == 7 and head.built_from == full.built_from
    # The library writes a transposed (Fortran-ordered) arr_0; create_index's output must read the same.
    tfrecord2idx.create_index(path)
    assert quick_head(index).n == 7


@pytest.mark.parametrize("order", ["C", "F"])
def test_quick_head_reads_a_slideflow_npz(tmp_path, order):
    path = write_tfrecord(tmp_path / "a.tfrecords", 5, index=False)
    arr_0 = np.asarray(tfrecord2idx.build_index(path).arr_0, order=order)
    np.savez(str(tmp_path / "a.index.npz"), arr_0)  # Slideflow: arr_0 only, no record of the TFRecord
    head = quick_head(str(tmp_path / "a.index.npz"))
    assert head.n == 5 and head.built_from is None and head.end == os.path.getsize(path)


def test_quick_head_declines_what_it_does_not_know(tmp_path):
    path = write_tfrecord(tmp_path / "a.tfrecords", 3, index=False)
    arr_0 = tfrecord2idx.build_index(path).arr_0
    np.savez_compressed(str(tmp_path / "c.index.npz"), arr_0)
    assert quick_head(str(tmp_path / "c.index.npz")) is None
    (tmp_path / "junk.index.npz").write_bytes(b"not a zip")
    assert quick_head(str(tmp_path / "junk.index.npz")) is None
    assert quick_head(str(tmp_path / "a.index")) is None


def test_pick_index_follows_find_index(tmp_path):
    write_tfrecord(tmp_path / "a.tfrecords", 2, index=False)
    for suffix in (".index.npy", ".index", ".index.npz"):
        (tmp_path / f"a{suffix}").write_bytes(b"")
        names = set(os.listdir(tmp_path))
        assert os.path.join(str(tmp_path), pick_index("a", names)) == tfrecord2idx.find_index(tmp_path / "a.tfrecords")


def test_current_indexes_are_counted_without_reading_tfrecords(tmp_path, monkeypatch):
    paths = [write_tfrecord(tmp_path / "t" / f"s{i}.tfrecords", i + 1) for i in range(4)]

    def refuse(*args, **kwargs):
        raise AssertionError("a TFRecord was read")

    monkeypatch.setattr(tfrecord2idx, "scan_frames", refuse)
    opened = []
    real_open, real_os_open = open, os.open

    def spy(file, *args, **kwargs):
        if not isinstance(file, int):  # a descriptor opened by os.open below, already counted
            opened.append(os.fspath(file))
        return real_open(file, *args, **kwargs)

    def os_spy(file, *args, **kwargs):
        opened.append(os.fspath(file))
        return real_os_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", spy)
    monkeypatch.setattr(os, "open", os_spy)
    counts, errors = count_tiles([entry(p) for p in paths])
    assert not errors and [counts[p][0] for p in paths] == [1, 2, 3, 4]
    assert sorted(opened) == sorted(tfrecord2idx.index_path(p) for p in paths)  # one open per index, nothing else


def test_foreign_indexes_text_npy_and_npz(tmp_path):
    a = write_tfrecord(tmp_path / "a.tfrecords", 3, index=False)
    b = write_tfrecord(tmp_path / "b.tfrecords", 4, index=False)
    c = write_tfrecord(tmp_path / "c.tfrecords", 5, index=False)
    np.savetxt(str(tmp_path / "a.index"), tfrecord2idx.build_index(a).arr_0, fmt="%d")
    np.save(str(tmp_path / "b.index.npy"), tfrecord2idx.build_index(b).arr_0)
    np.savez(str(tmp_path / "c.index.npz"), tfrecord2idx.build_index(c).arr_0)
    counts, errors = count_tiles([entry(p) for p in (a, b, c)], jobs=1)
    assert not errors and {p: v[0] for p, v in counts.items()} == {a: 3, b: 4, c: 5}
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["a.tfrecords", "b.tfrecords", "c.tfrecords", "a.index", "b.index.npy", "c.index.npz"]
    )  # foreign indexes are used, never replaced


def test_stale_foreign_index_is_an_error_naming_the_file(tmp_path):
    a = write_tfrecord(tmp_path / "d" / "299px_10x" / "a.tfrecords", 3, index=False)
    np.savez(str(tmp_path / "d" / "299px_10x" / "a.index.npz"), tfrecord2idx.build_index(a).arr_0)
    write_tfrecord(a, 4, index=False)
    with pytest.raises(DatasetError, match=r"(?s)cannot count the tiles of 1 TFRecord.*a\.tfrecords.*StaleIndexError.*slidetiles verify"):
        Dataset(tfrecords=tmp_path / "d", tile_px=299, tile_um="10x")


def test_corrupt_tfrecord_without_index_is_an_error(tmp_path):
    path = tmp_path / "d" / "bad.tfrecords"
    write_tfrecord(path, 3, index=False)
    data = bytearray(path.read_bytes())
    data[20] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="(?s)bad.tfrecords.*CorruptRecordError"):
        Dataset(tfrecords=tmp_path / "d", jobs=1)


def test_missing_and_stale_indexes_are_built_in_parallel(tmp_path):
    folder = tmp_path / "tfr" / "299px_10x"
    paths = [write_tfrecord(folder / f"s{i}.tfrecords", i + 2, index=i % 2 == 0) for i in range(6)]
    write_tfrecord(paths[0], 9)  # rewritten after indexing: our index is stale...
    tfrecord2idx.save_index(paths[0], np.array([[0, 30]]))  # ... and now claims one record
    os.utime(paths[0], ns=(1, 1))  # with a different mtime than it records
    ds = Dataset(tfrecords=tmp_path / "tfr", tile_px=299, tile_um="10x", jobs=2, progress=False)
    assert [ds.manifest()[p]["total"] for p in paths] == [9, 3, 4, 5, 6, 7]
    for p in paths:
        index = tfrecord2idx._load_file(tfrecord2idx.index_path(p))
        st = os.stat(p)
        assert index.built_from == (st.st_size, st.st_mtime_ns)
    table = ds.slide_table().set_index("slide")
    assert table.loc["s0", "mtime_ns"] == 1  # what the count was computed from


def test_empty_tfrecord_counts_zero_without_an_index(tmp_path):
    write_tfrecord(tmp_path / "e.tfrecords", 0)
    counts, errors = count_tiles([entry(tmp_path / "e.tfrecords")])
    assert not errors and counts[str(tmp_path / "e.tfrecords")][0] == 0
    assert not os.path.exists(tmp_path / "e.index.npz")


def test_run_parallel_in_process_for_one_job(monkeypatch):
    monkeypatch.setattr(tilecounts, "ProcessPoolExecutor", None)  # would fail if a pool were started
    assert tilecounts.run_parallel(len, ["ab", "c"], jobs=1, description="x", progress=False) == [2, 1]
