"""Hostile and damaged files: every one gives the right answer or a named slidetiles error, never a wrong answer.

Fault injection flips bits in and truncates real index files and TFRecords; the other tests build the hostile
files of issue #10 by hand (a FIFO named .tfrecords, a loc varint wider than 64 bits, a full disk...).
"""

import errno
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import textwrap
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import slidetiles.errors as errors_module
from helpers import write_tiles
from slidetiles.dataset.sources import parse_sources
from slidetiles.dataset.tilecounts import count_tiles, quick_head
from slidetiles.errors import (
    InvalidExampleError,
    NotATFRecordError,
    OutputWriteError,
    SlidetilesError,
    TFRecordError,
    TFRecordIndexError,
    TileImageError,
)
from slidetiles.io import fastscan, tfrecord2idx
from slidetiles.io.example import tile_example
from slidetiles.io.reader import iter_records, verify_tfrecord
from slidetiles.io.tiles import write_tfrecords_single
from slidetiles.io.writer import TFRecordWriter, atomic_write, remove_stale_temporaries, temporary_path_for
from slidetiles.tfrecord import TFRecord

N = 12
MTIME_NS = 1_700_000_000_123_456_789
FAULT = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, jpeg_tiles):
    """Bytes of a 12-record TFRecord (fixed mtime), of our index of it, and of Slideflow's form of that index."""
    folder = tmp_path_factory.mktemp("pristine")
    path = str(folder / "s.tfrecords")
    locs = write_tiles(path, jpeg_tiles)
    os.utime(path, ns=(MTIME_NS, MTIME_NS))
    index_file = tfrecord2idx.create_index(path)
    with open(path, "rb") as f:
        tfrecord = f.read()
    with open(index_file, "rb") as f:
        ours = f.read()
    built = tfrecord2idx.build_index(path)
    foreign_file = str(folder / "foreign.npz")
    np.savez(foreign_file, arr_0=built.arr_0, locations=np.array(locs))
    with open(foreign_file, "rb") as f:
        foreign = f.read()
    np.save(str(folder / "foreign.npy"), built.arr_0)
    with open(folder / "foreign.npy", "rb") as f:
        npy = f.read()
    text = "".join(f"{start} {length}\n" for start, length in built.arr_0).encode()
    return Pristine(tfrecord=tfrecord, ours=ours, foreign={".index.npz": foreign, ".index.npy": npy, ".index": text},
                    arr_0=built.arr_0, locations=built.locations)


class Pristine(dict):
    """The pristine files' bytes; a short repr, since hypothesis prints its arguments for every failing example."""

    def __repr__(self):
        return "Pristine(...)"


def place(folder, tfrecord: bytes, index: bytes | None = None, name="s"):
    """Write a TFRecord (mtime fixed, so our pristine index's stamp matches it) and optionally its index."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.tfrecords")
    for stale in os.listdir(folder):
        os.unlink(os.path.join(folder, stale))
    with open(path, "wb") as f:
        f.write(tfrecord)
    os.utime(path, ns=(MTIME_NS, MTIME_NS))
    if index is not None:
        with open(tfrecord2idx.index_path(path), "wb") as f:
            f.write(index)
    return path


def damage(data: bytes, how) -> bytes:
    kind, where = how
    if kind == "flip":
        bit = where % (8 * len(data))
        out = bytearray(data)
        out[bit // 8] ^= 1 << (bit % 8)
        return bytes(out)
    return data[: where % len(data)]


damages = st.tuples(st.sampled_from(["flip", "truncate"]), st.integers(min_value=0, max_value=1 << 30))


def entry(path):
    st_ = os.stat(path)
    index = tfrecord2idx.find_index(path)
    return path, st_.st_size, st_.st_mtime_ns, index


# -- damaged index files ------------------------------------------------------------------------------------


@FAULT
@given(how=damages)
def test_damaged_index_of_ours_never_gives_a_wrong_count(tmp_path, pristine, how):
    folder = str(tmp_path / "ours")
    path = place(folder, pristine["tfrecord"], damage(pristine["ours"], how))
    index_file = tfrecord2idx.index_path(path)
    # The quick reader either vouches for the right count or passes the file on.
    head = quick_head(index_file)
    if head is not None and head.end == len(pristine["tfrecord"]):
        assert head.n == N
    # Without rebuilding: the right index or an error naming the index file.
    try:
        index = tfrecord2idx.read_index(path, create=False)
    except TFRecordIndexError as error:
        assert error.path == index_file
    else:
        np.testing.assert_array_equal(index.arr_0, pristine["arr_0"])
    # A Dataset's count and TFRecord(): our index is rebuilt when damaged, unless so little of it is left that
    # nothing says it is ours (then someone else's index may be at stake: an error naming it).
    recognisable = b"slidetiles_index.npy" in damage(pristine["ours"], how)
    place(folder, pristine["tfrecord"], damage(pristine["ours"], how))
    counts, errors = count_tiles([entry(path)], jobs=1, progress=False)
    if errors:
        assert not recognisable and index_file in errors[path] and "TFRecordIndexError" in errors[path]
    else:
        assert counts[path][0] == N
    place(folder, pristine["tfrecord"], damage(pristine["ours"], how))
    try:
        tfr = TFRecord(path)
    except TFRecordIndexError as error:
        assert not recognisable and error.path == index_file
    else:
        assert len(tfr) == N and tfr[N - 1]["loc_x"] == pristine["locations"][N - 1, 0]
        tfr.close()


@pytest.mark.parametrize("suffix", [".index.npz", ".index.npy", ".index"])
@FAULT
@given(how=damages)
def test_damaged_foreign_index_gives_the_right_count_or_names_the_file(tmp_path, pristine, suffix, how):
    # Slideflow's npz, its .npy and the tfrecord package's text index.
    folder = str(tmp_path / "foreign")
    path = place(folder, pristine["tfrecord"])
    index_file = path[: -len(".tfrecords")] + suffix
    with open(index_file, "wb") as f:
        f.write(damage(pristine["foreign"][suffix], how))
    before = open(index_file, "rb").read()
    counts, errors = count_tiles([entry(path)], jobs=1, progress=False)
    if errors:
        assert path in errors and index_file in errors[path]
    else:
        assert counts[path][0] == N
    try:
        index = tfrecord2idx.read_index(path)
    except TFRecordIndexError as error:
        assert error.path == index_file
    else:
        np.testing.assert_array_equal(index.arr_0, pristine["arr_0"])
    assert open(index_file, "rb").read() == before  # someone else's index is never rewritten


def test_flipped_npy_header_bit_that_read_7_for_3_is_caught(tmp_path, jpeg_tiles):
    # The case found by fault injection: the shape in arr_0's npy header turned from (3, 2) to (7, 2).
    path = str(tmp_path / "s.tfrecords")
    write_tiles(path, jpeg_tiles[:3])
    index_file = tfrecord2idx.create_index(path)
    data = bytearray(open(index_file, "rb").read())
    at = data.index(b"'shape': (3, 2)") + len("'shape': (")
    data[at] ^= 0x04  # '3' -> '7'
    with open(index_file, "wb") as f:
        f.write(data)
    assert quick_head(index_file) is None
    with pytest.raises(TFRecordIndexError) as info:
        tfrecord2idx.read_index(path, create=False)
    assert info.value.path == index_file
    counts, errors = count_tiles([entry(path)], jobs=1, progress=False)
    assert errors == {} and counts[path][0] == 3


@pytest.mark.parametrize("forge", ["dropped_rows", "huge_length", "short_last"])
def test_index_of_ours_with_matching_stamp_must_cover_the_file(tmp_path, jpeg_tiles, forge):
    path = str(tmp_path / "s.tfrecords")
    locs = write_tiles(path, jpeg_tiles)
    good = tfrecord2idx.build_index(path).arr_0
    arr_0, locations = good.copy(), np.array(locs)
    if forge == "dropped_rows":
        arr_0, locations = arr_0[:-4], locations[:-4]
    elif forge == "huge_length":
        arr_0[-1, 1] = 1 << 60
    else:
        arr_0[-1, 1] -= 1
    # A well-formed npz with the right size/mtime stamp: only the rows are wrong.
    index_file = tfrecord2idx.save_index(path, arr_0, locations)
    assert quick_head(index_file) is not None
    with pytest.raises(TFRecordIndexError, match="damaged index") as info:
        tfrecord2idx.read_index(path, create=False)
    assert info.value.path == index_file
    counts, errors = count_tiles([entry(path)], jobs=1, progress=False)
    assert errors == {} and counts[path][0] == N
    tfrecord2idx.save_index(path, arr_0, locations)
    with TFRecord(path) as tfr:  # rebuilt, never a MemoryError or missing tiles
        assert len(tfr) == N and [r["loc_x"] for r in tfr] == [x for x, _ in locs]
    np.testing.assert_array_equal(tfrecord2idx.read_index(path, create=False).arr_0, good)


# -- damaged TFRecords ----------------------------------------------------------------------------------------


def outcome(function):
    try:
        return "ok", function()
    except TFRecordError as error:
        return "error", (type(error), str(error), error.path, error.record, error.offset)


@FAULT
@given(how=damages)
def test_damaged_tfrecord_index_build_is_right_or_named_in_both_paths(tmp_path, pristine, how, monkeypatch):
    data = damage(pristine["tfrecord"], how)
    path = place(str(tmp_path / "t"), data)
    results = []
    for pure in ("1", "0"):
        monkeypatch.setenv("SLIDETILES_PURE_PYTHON", pure)
        results.append(outcome(lambda: tfrecord2idx.build_index(path)))
    (kind, value), other = results[0], results[1]
    if kind == "error":
        assert other == results[0]  # same class, message, record and offset from C and Python
        assert value[2] == path
    else:
        assert other[0] == "ok"
        # Only a cut at a record boundary leaves a valid file: its records are the first ones of the original.
        assert how[0] == "truncate"
        k = len(value)
        assert 0 < k < N and value.end() == len(data)
        for index in (value, other[1]):
            np.testing.assert_array_equal(index.arr_0, pristine["arr_0"][:k])
            np.testing.assert_array_equal(index.locations, pristine["locations"][:k])
    # Reading the records sequentially agrees with the index build.
    monkeypatch.delenv("SLIDETILES_PURE_PYTHON")
    read = outcome(lambda: [r["loc_x"] for r in iter_records(path)])
    assert read[0] == kind
    if kind == "error":
        assert read[1][2] == path


@FAULT
@given(how=st.integers(min_value=0, max_value=1 << 30))
def test_flipped_bit_under_a_current_index_is_a_named_error_on_read(tmp_path, pristine, how):
    # Same size and mtime: the index still vouches for the file, so the damage is met when the record is read.
    path = place(str(tmp_path / "r"), damage(pristine["tfrecord"], ("flip", how)), pristine["ours"])
    with TFRecord(path, create_index=False) as tfr:
        assert len(tfr) == N
        failures = 0
        for i in range(N):
            try:
                record = tfr[i]
            except TFRecordError as error:
                assert error.path == path and error.record == i
                failures += 1
            else:
                assert (record["loc_x"], record["loc_y"]) == tuple(pristine["locations"][i])
        assert failures == 1


# -- loc varints wider than 64 bits ---------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def record_with_loc_x(encoded: bytes) -> bytes:
    """A tile Example whose loc_x is the varint ``encoded``, byte for byte."""
    payload = tile_example(b"\xff\xd8\xff\xe0jpeg\xff\xd9", "s", 5, 7)
    entry_ = bytes.fromhex("0a0e0a056c6f635f7812051a030a0105")  # loc_x = 5 as written by tile_example
    at = payload.index(entry_)
    packed = b"\x0a" + bytes([len(encoded)]) + encoded
    feature = b"\x12" + bytes([len(packed) + 2]) + b"\x1a" + bytes([len(packed)]) + packed
    body = b"\x0a\x05loc_x" + feature
    features = payload[2:at] + b"\x0a" + bytes([len(body)]) + body + payload[at + len(entry_) :]
    return b"\x0a" + _varint(len(features)) + features


@pytest.mark.parametrize("pure", ["1", "0"])
@pytest.mark.parametrize(
    "encoded, expected",
    [
        (b"\xff" * 9 + b"\x7f", -1),  # 70 bits on the wire; protobuf keeps the low 64
        (b"\xff" * 9 + b"\x03", -1),
        (b"\x85" + b"\x80" * 8 + b"\x02", 5),
        (b"\x80" * 9 + b"\x01", -(1 << 63)),
    ],
)
def test_loc_varint_wider_than_64_bits_reads_as_protobuf_reads_it(tmp_path, monkeypatch, pure, encoded, expected):
    monkeypatch.setenv("SLIDETILES_PURE_PYTHON", pure)
    path = str(tmp_path / "v.tfrecords")
    with TFRecordWriter(path) as writer:
        writer.write(record_with_loc_x(encoded))
        writer.write(tile_example(b"\xff\xd8\xff\xe0jpeg\xff\xd9", "s", 9, 9))
    index_file = tfrecord2idx.create_index(path)
    assert tfrecord2idx.read_index(path).locations.tolist() == [[expected, 7], [9, 9]]
    with TFRecord(path) as tfr:
        assert tfr.locations == [(expected, 7), (9, 9)] and tfr[0]["loc_x"] == expected
        assert tfr.get_record_by_xy(expected, 7)[0] == "s"
    assert [r["loc_x"] for r in iter_records(path)] == [expected, 9]
    assert index_file and verify_tfrecord(path).ok


@pytest.mark.parametrize("pure", ["1", "0"])
def test_loc_varint_of_eleven_bytes_is_a_named_error_everywhere(tmp_path, monkeypatch, pure):
    monkeypatch.setenv("SLIDETILES_PURE_PYTHON", pure)
    path = str(tmp_path / "v.tfrecords")
    with TFRecordWriter(path) as writer:
        writer.write(tile_example(b"\xff\xd8\xff\xe0jpeg\xff\xd9", "s", 9, 9))
        writer.write(record_with_loc_x(b"\xff" * 10 + b"\x01"))
    for attempt in (lambda: tfrecord2idx.create_index(path), lambda: TFRecord(path), lambda: list(iter_records(path))):
        with pytest.raises(InvalidExampleError) as info:
            attempt()
        assert info.value.path == path and info.value.record == 1


def test_fast_scanner_agrees_on_wide_varints():
    if not fastscan.available():
        pytest.skip("the C extension is not compiled or has no hardware CRC here")
    from slidetiles.io import _fastscan
    from slidetiles.io.example import scan_locations

    for encoded in (b"\xff" * 9 + b"\x7f", b"\x85" + b"\x80" * 8 + b"\x02", b"\xff" * 10 + b"\x01", _varint(300)):
        payload = record_with_loc_x(encoded)
        fast = _fastscan.scan_locations(payload)
        if fast is not None:  # C answers only where it agrees with Python; otherwise Python decides
            assert fast == scan_locations(payload)


# -- files that are not regular files -------------------------------------------------------------------------


@contextmanager
def must_not_block(seconds=5.0):
    """Fail instead of hanging if the block waits (as open() of a FIFO with no writer does)."""

    def alarm(signum, frame):
        raise AssertionError("blocked: a named pipe was opened as a file")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_fifo_named_tfrecords_is_refused_not_waited_on(tmp_path, monkeypatch):
    path = str(tmp_path / "pipe.tfrecords")
    os.mkfifo(path)
    attempts = {
        "build_index": lambda: tfrecord2idx.build_index(path),
        "read_index": lambda: tfrecord2idx.read_index(path),
        "TFRecord": lambda: TFRecord(path),
        "iter_records": lambda: list(iter_records(path)),
    }
    for pure in ("1", "0"):
        monkeypatch.setenv("SLIDETILES_PURE_PYTHON", pure)
        for name, attempt in attempts.items():
            with must_not_block(), pytest.raises(NotATFRecordError, match="named pipe") as info:
                attempt()
            assert info.value.path == path, name
    with must_not_block():
        report = verify_tfrecord(path)
    assert not report.ok and isinstance(report.errors[0], NotATFRecordError)
    folder = str(tmp_path / "dir.tfrecords")
    os.mkdir(folder)
    with pytest.raises(NotATFRecordError, match="folder"):
        tfrecord2idx.build_index(folder)
    assert sorted(os.listdir(tmp_path)) == ["dir.tfrecords", "pipe.tfrecords"]  # no index written for either


def test_fifo_named_like_an_index_is_neither_read_nor_replaced(tmp_path, jpeg_tiles):
    path = str(tmp_path / "s.tfrecords")
    write_tiles(path, jpeg_tiles[:3])
    fifo = tfrecord2idx.index_path(path)
    os.mkfifo(fifo)
    with must_not_block():
        assert quick_head(fifo) is None
        counts, errors = count_tiles([(path, *entry(path)[1:3], fifo)], jobs=1, progress=False)
    assert errors == {} and counts[path][0] == 3
    assert os.path.exists(fifo) and not os.path.isfile(fifo)  # still the user's pipe


# -- names and paths --------------------------------------------------------------------------------------------


def test_tile_coordinate_beyond_int64_names_the_tile(tmp_path, jpeg_tiles):
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    (tiles / "s-10-20.jpg").write_bytes(jpeg_tiles[0])
    (tiles / f"s-{1 << 63}-20.jpg").write_bytes(jpeg_tiles[1])
    out = tmp_path / "out"
    with pytest.raises(TileImageError, match="64-bit") as info:
        write_tfrecords_single(tiles, out, "s", "s")
    assert info.value.path == str(tiles / f"s-{1 << 63}-20.jpg")
    assert not out.exists() or os.listdir(out) == []
    (tiles / f"s-{1 << 63}-20.jpg").rename(tiles / f"s-{(1 << 63) - 1}-20.jpg")  # the largest int64 is fine
    path = write_tfrecords_single(tiles, out, "s", "s")
    assert sorted(TFRecord(path).locations) == [(10, 20), ((1 << 63) - 1, 20)]


def test_nul_byte_in_a_sources_config_names_source_and_key(tmp_path):
    config = tmp_path / "datasets.json"
    config.write_text(json.dumps({"good": {"tfrecords": str(tmp_path)}, "bad": {"tiles": "/data/ti\x00les"}}))
    from slidetiles.dataset import Dataset
    from slidetiles.errors import DatasetError

    with pytest.raises(DatasetError, match=r"datasets\.json: source 'bad' has tiles=.*NUL"):
        Dataset(config, sources="good", tile_px=299, tile_um=302)
    with pytest.raises(DatasetError, match="source 'dataset' has tfrecords=.*NUL"):
        Dataset(tfrecords=str(tmp_path) + "\x00", tile_px=299, tile_um=302)
    assert parse_sources({"a": {"roi": None}})["a"].roi is None


def test_nul_byte_in_the_pipeline_config_names_the_key():
    from slidetiles.pipeline.discovery import ConfigError, check_config

    config = {"sources": {"s": {"tiles": "t", "tfrecords": "o"}}, "datasets": {"d": {"annotations": ["a\x00.csv"]}}}
    with pytest.raises(ConfigError, match=r"datasets\.d\.annotations\.0: .*NUL"):
        check_config(config)


# -- writing: full disk, killed writers ----------------------------------------------------------------------


def run_python(code: str, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=120, **kwargs)


def test_file_size_limit_while_writing_is_a_named_error_and_leaves_nothing(tmp_path):
    # RLIMIT_FSIZE makes write() fail with EFBIG for real, as a full disk fails with ENOSPC.
    folder = str(tmp_path)
    result = run_python(
        f"""
        import json, os, resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
        from slidetiles.errors import OutputWriteError
        from slidetiles.io.tfrecord2idx import save_index
        from slidetiles.io.writer import TFRecordWriter, atomic_write
        import numpy as np
        out = {{}}
        try:
            with TFRecordWriter({folder!r} + "/big.tfrecords") as w:
                for i in range(100):
                    w.write_tile(os.urandom(4000), "big", i, i)
        except OutputWriteError as e:
            out["writer"] = [type(e).__name__, e.errno, e.path, str(e)]
        try:
            with atomic_write({folder!r} + "/big.json", "w") as f:
                f.write("x" * 200_000)
        except OutputWriteError as e:
            out["atomic"] = [type(e).__name__, e.errno, e.path, str(e)]
        with open({folder!r} + "/small.tfrecords", "wb") as f:
            f.write(b"")
        try:
            save_index({folder!r} + "/small.tfrecords", np.zeros((5000, 2), np.int64))
        except OutputWriteError as e:
            out["index"] = [type(e).__name__, e.errno, e.path, str(e)]
        print(json.dumps(out))
        """
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.splitlines()[-1])
    for key, name in (("writer", "big.tfrecords"), ("atomic", "big.json"), ("index", "small.index.npz")):
        kind, code, path, text = out[key]
        assert kind == "OutputWriteError" and code == errno.EFBIG
        assert path == os.path.join(folder, name) and path in text and "ulimit" in text
    assert sorted(os.listdir(folder)) == ["small.tfrecords"]  # no partial file, no temporary file
    error = OutputWriteError("/x/y.tfrecords", errno.ENOSPC, "no space")
    assert isinstance(error, OSError) and pickle.loads(pickle.dumps(error)).errno == errno.ENOSPC


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temporaries_of_killed_writers_are_removed_by_the_next_write(tmp_path, jpeg_tiles):
    target = str(tmp_path / "x.tfrecords")
    # A writer killed mid-file, for real.
    result = run_python(
        f"""
        import os, signal
        from slidetiles.io.writer import TFRecordWriter
        w = TFRecordWriter({target!r})
        w.write(b"half a slide")
        w._file.flush()
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    assert result.returncode == -signal.SIGKILL
    killed = [name for name in os.listdir(tmp_path) if name.startswith(".x.tfrecords.tmp-")]
    assert len(killed) == 1
    host = os.path.basename(temporary_path_for(target)).split("-")[2]
    gone, alive = dead_pid(), os.getppid()
    stale = [f".x.tfrecords.tmp-{gone}-{host}-0badc0de", f".x.tfrecords.tmp-{gone}-12345678"]  # the latter: older form
    kept = [
        f".x.tfrecords.tmp-{alive}-{host}-0badc0de",  # a live writer
        f".x.tfrecords.tmp-{os.getpid()}-0badc0de",  # this process
        f".x.tfrecords.tmp-{gone}-{'0' if host[0] != '0' else '1'}{host[1:]}-0badc0de",  # another host
        f".y.tfrecords.tmp-{gone}-{host}-0badc0de",  # another target
        f".x.tfrecords.tmp-{gone}-{host}-0badc0de.bak",  # not our pattern
        f"x.tfrecords.tmp-{gone}-{host}-0badc0de",  # not hidden
        f".x.tfrecords.tmp-{gone}-{host}-0BADC0DE",
    ]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"partial")
    os.mkdir(tmp_path / f".x.tfrecords.tmp-{gone}-{host}-0ddba11f")  # a folder, even if named like ours
    kept.append(f".x.tfrecords.tmp-{gone}-{host}-0ddba11f")
    (tmp_path / "elsewhere").write_bytes(b"keep me")
    os.symlink(tmp_path / "elsewhere", tmp_path / f".x.tfrecords.tmp-{gone}-{host}-5ca1ab1e")
    kept += ["elsewhere", f".x.tfrecords.tmp-{gone}-{host}-5ca1ab1e"]
    write_tiles(target, jpeg_tiles[:2])
    assert sorted(os.listdir(tmp_path)) == sorted(kept + ["x.tfrecords"])
    assert (tmp_path / "elsewhere").read_bytes() == b"keep me"
    # The folder was listed once, at the first write here; a later leftover needs a new process (or a rescan).
    late = tmp_path / f".x.tfrecords.tmp-{gone}-{host}-1a7e1a7e"
    late.write_bytes(b"partial")
    assert remove_stale_temporaries(target) == [] and late.exists()
    assert remove_stale_temporaries(target, rescan=True) == [str(late)] and not late.exists()
    # atomic_write (indexes, manifests) cleans up after its own killed writers too.
    other = tmp_path / "other"
    other.mkdir()
    index_tmp = f".y.index.npz.tmp-{gone}-{host}-feedface"
    (other / index_tmp).write_bytes(b"partial")
    write_tiles(other / "y.tfrecords", jpeg_tiles[:1])
    tfrecord2idx.create_index(other / "y.tfrecords")
    assert sorted(os.listdir(other)) == ["y.index.npz", "y.tfrecords"]


def test_temporary_names_are_recognised_by_the_cleaner(tmp_path):
    target = str(tmp_path / "a name with spaces.index.npz")
    with atomic_write(target) as f:
        f.write(b"x")
        (tmp_name,) = [n for n in os.listdir(tmp_path) if ".tmp-" in n]
    # What this process writes is recognised as ours, with this host's tag (and left alone while it is alive).
    assert os.path.basename(temporary_path_for(target)).startswith(".a name with spaces.index.npz.tmp-")
    assert tmp_name.split(".tmp-")[1].split("-")[0] == str(os.getpid())
    assert socket.gethostname()  # the host tag is made from it


# -- worker processes and pickling -------------------------------------------------------------------------------


def test_every_error_class_pickles_with_its_attributes():
    samples = {
        errors_module.TFRecordError: ("/a.tfrecords", "bad", 3, 99),
        errors_module.FileError: ("/a.index.npz", "bad"),
        errors_module.OutputWriteError: ("/a.tfrecords", errno.EFBIG, "bad"),
        errors_module.StaleManifestError: ("/m.json", ["/a"], ["/b"]),
        errors_module.SourceChangedError: (["/a.tfrecords"], "bad"),
    }
    classes = [c for c in vars(errors_module).values() if isinstance(c, type) and issubclass(c, SlidetilesError)]
    for cls in classes:
        base = next((b for b in cls.__mro__ if b in samples), None)
        error = cls(*samples[base]) if base else cls("message")
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is cls and str(copy) == str(error)
        assert getattr(copy, "path", None) == getattr(error, "path", None)


def test_index_error_in_a_worker_arrives_as_itself(tmp_path, jpeg_tiles):
    from slidetiles.loaders import TileSource, make_torch_loader

    path = str(tmp_path / "w.tfrecords")
    locs = write_tiles(path, jpeg_tiles[:6], slide="w")
    source = TileSource(path, "w", None, 6, None, 1.0)
    # Damaged after counting, stamp still matching: the worker must refuse it, as the main process would.
    tfrecord2idx.save_index(path, tfrecord2idx.build_index(path).arr_0[:3], np.array(locs[:3]))
    loader = make_torch_loader([source], batch_size=2, num_workers=1, infinite=False, seed=0, check=False,
                               persistent_workers=False)
    try:
        list(loader)
    except Exception as caught:
        # A kept traceback holds the DataLoader iterator in a cycle, and torch then waits 5 s per worker at exit.
        caught.__traceback__ = None
        error = caught
    else:
        raise AssertionError("the damaged index was used")
    assert type(error) is TFRecordIndexError and error.path == tfrecord2idx.index_path(path)
    assert "damaged index" in str(error)
    assert any("DataLoader worker process 0" in note for note in error.__notes__)
