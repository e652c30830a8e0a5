"""Index files: Slideflow's format both ways, legacy formats, staleness."""

import os

import numpy as np
import pytest

from slidetiles.errors import InvalidExampleError, StaleIndexError, TFRecordIndexError
from slidetiles.io import tfrecord2idx
from slidetiles.io.writer import TFRecordWriter

from helpers import write_tiles


def expected_arr0(path):
    """Frame layout computed independently of our scanner: walk the length fields by hand."""
    data = open(path, "rb").read()
    rows, pos = [], 0
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 8], "little")
        rows.append((pos, length + 16))
        pos += length + 16
    return np.array(rows, dtype=np.int64)


def test_create_index_matches_slideflow_layout(tile_tfrecord):
    path, tiles, locs = tile_tfrecord
    index_file = tfrecord2idx.create_index(path)
    assert index_file == path.replace(".tfrecords", ".index.npz")
    with np.load(index_file, allow_pickle=False) as npz:
        assert npz["arr_0"].dtype == np.int64 and npz["arr_0"].shape == (len(tiles), 2)
        np.testing.assert_array_equal(npz["arr_0"], expected_arr0(path))
        np.testing.assert_array_equal(npz["locations"], np.array(locs))
        assert npz["locations"].dtype == np.int64


def test_writer_index_equals_scanned_index(tmp_path, jpeg_tiles):
    path = tmp_path / "w.tfrecords"
    with TFRecordWriter(path) as writer:
        for i, tile in enumerate(jpeg_tiles):
            writer.write_tile(tile, "w", i, 2 * i)
    arr_0, locs = writer.index_arrays()
    built = tfrecord2idx.build_index(path)
    np.testing.assert_array_equal(arr_0, built.arr_0)
    np.testing.assert_array_equal(locs, built.locations)


def test_reads_slideflow_npz_and_legacy_formats(tile_tfrecord):
    path, tiles, locs = tile_tfrecord
    arr_0 = expected_arr0(path)
    stem = path[: -len(".tfrecords")]
    # Slideflow's npz: arr_0 + locations, no extra keys.
    np.savez(stem + ".index.npz", arr_0, locations=np.array(locs))
    index = tfrecord2idx.read_index(path)
    assert not index.is_ours
    np.testing.assert_array_equal(index.arr_0, arr_0)
    np.testing.assert_array_equal(tfrecord2idx.load_index(path), arr_0)
    os.unlink(stem + ".index.npz")
    # The text format of the tfrecord package / DALI.
    with open(stem + ".index", "w") as f:
        f.writelines(f"{start} {length}\n" for start, length in arr_0)
    np.testing.assert_array_equal(tfrecord2idx.load_index(path), arr_0)
    os.unlink(stem + ".index")
    np.save(stem + ".index.npy", arr_0)
    np.testing.assert_array_equal(tfrecord2idx.load_index(path), arr_0)


def test_load_index_without_index_returns_none(tile_tfrecord):
    path = tile_tfrecord[0]
    assert tfrecord2idx.load_index(path) is None
    assert not os.path.exists(tfrecord2idx.index_path(path))


def test_our_stale_index_is_rebuilt(tmp_path, jpeg_tiles):
    path = str(tmp_path / "s.tfrecords")
    write_tiles(path, jpeg_tiles[:5])
    tfrecord2idx.create_index(path)
    write_tiles(path, jpeg_tiles)  # rewritten after indexing
    assert len(tfrecord2idx.load_index(path)) == len(jpeg_tiles)
    with pytest.raises(StaleIndexError, match="changed after this index was built"):
        write_tiles(path, jpeg_tiles[:3])
        tfrecord2idx.read_index(path, create=False)


def test_foreign_stale_index_is_an_error_and_left_alone(tmp_path, jpeg_tiles):
    path = str(tmp_path / "f.tfrecords")
    write_tiles(path, jpeg_tiles[:4])
    stem = path[: -len(".tfrecords")]
    np.savez(stem + ".index.npz", expected_arr0(path))
    before = open(stem + ".index.npz", "rb").read()
    write_tiles(path, jpeg_tiles)
    with pytest.raises(StaleIndexError, match="slidetiles index --force"):
        tfrecord2idx.read_index(path)
    assert open(stem + ".index.npz", "rb").read() == before


def test_pickled_index_is_refused(tile_tfrecord):
    path = tile_tfrecord[0]
    np.savez(path.replace(".tfrecords", ".index.npz"), np.array([object()], dtype=object))
    with pytest.raises(TFRecordIndexError, match="cannot read the index"):
        tfrecord2idx.read_index(path)


def test_inconsistent_index_is_refused(tile_tfrecord):
    path = tile_tfrecord[0]
    bad = expected_arr0(path)
    bad[2, 0] += 1
    np.savez(path.replace(".tfrecords", ".index.npz"), bad)
    with pytest.raises(TFRecordIndexError, match="do not follow each other"):
        tfrecord2idx.read_index(path)


def test_records_without_locations(tmp_path, jpeg_tiles):
    path = str(tmp_path / "noloc.tfrecords")
    write_tiles(path, jpeg_tiles[:3], locations=False)
    tfrecord2idx.create_index(path)
    with np.load(tfrecord2idx.index_path(path), allow_pickle=False) as npz:
        # Slideflow's form (np.savez(..., locations=[])): its TFRecord() refuses an index without the key.
        assert npz["locations"].shape == (0,) and npz["locations"].dtype == np.float64
    assert tfrecord2idx.read_index(path).locations is None


def test_index_of_non_example_payload_names_record(tmp_path):
    path = tmp_path / "junk.tfrecords"
    with TFRecordWriter(path) as writer:
        writer.write(b"\x0a\x05\x0a\x03")
    with pytest.raises(InvalidExampleError) as info:
        tfrecord2idx.create_index(path)
    assert info.value.record == 0


def test_unwritable_index_builds_in_memory(tmp_path, jpeg_tiles):
    path = str(tmp_path / "r.tfrecords")
    write_tiles(path, jpeg_tiles[:3])
    # A folder squatting on the index path makes the write fail even as root (chmod would not).
    os.mkdir(tfrecord2idx.index_path(path))
    index = tfrecord2idx.read_index(path)
    assert len(index) == 3 and index.path is None
    assert [f for f in os.listdir(tmp_path) if ".tmp-" in f] == []


def test_index_without_locations_round_trips_with_slideflow(tmp_path, jpeg_tiles, slideflow):
    from slidetiles.loaders import TileSource, check_sources, make_torch_loader
    from slidetiles.tfrecord import TFRecord

    path = str(tmp_path / "noloc.tfrecords")
    write_tiles(path, jpeg_tiles[:3], locations=False)
    # Ours -> Slideflow: its TFRecord() needs the 'locations' key (it refused our index without it).
    ours = tfrecord2idx.create_index(path)
    theirs = slideflow.TFRecord(path)
    assert len(theirs) == 3 and list(theirs.locations) == []
    assert theirs[2]["image_raw"] == jpeg_tiles[2]
    assert slideflow.util.tfrecord2idx.get_tfrecord_length(path) == 3
    # Slideflow -> ours: its empty 'locations' means "no locations", not a damaged index.
    os.unlink(ours)
    written = slideflow.util.tfrecord2idx.create_index(path)
    assert written == ours
    with np.load(written, allow_pickle=False) as npz:
        assert npz["locations"].shape == (0,)
    with open(written, "rb") as f:
        before = f.read()
    index = tfrecord2idx.read_index(path, create=False)
    assert not index.is_ours and len(index) == 3 and index.locations is None
    with TFRecord(path) as tfr:
        assert tfr.locations is None and tfr[1]["image_raw"] == jpeg_tiles[1]
    sources = TileSource.from_paths([path], create_index=False)
    check_sources(sources)  # was: "the TFRecord changed since it was counted"
    loader = make_torch_loader(sources, batch_size=3, infinite=False, seed=0)
    assert [batch[0].shape[0] for batch in loader] == [3]
    with open(written, "rb") as f:
        assert f.read() == before  # left as Slideflow wrote it


def test_index_with_locations_round_trips_with_slideflow(tile_tfrecord, slideflow):
    path, _, locs = tile_tfrecord
    ours = tfrecord2idx.create_index(path)
    assert slideflow.TFRecord(path).locations == [tuple(loc) for loc in locs]
    os.unlink(ours)
    slideflow.util.tfrecord2idx.create_index(path)
    index = tfrecord2idx.read_index(path, create=False)
    assert not index.is_ours and index.locations.tolist() == [list(loc) for loc in locs]
