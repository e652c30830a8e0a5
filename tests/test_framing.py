"""TFRecord framing and sequential reading: round trips, every kind of damage, and fuzzing."""

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slidetiles import errors
from slidetiles.io.example import WireError, build_example, scan_locations, tile_example
from slidetiles.io.framing import masked_crc32c, scan_frames
from slidetiles.io.reader import iter_records, verify_tfrecord
from slidetiles.io.writer import TFRecordWriter


def write_payloads(path, payloads):
    with TFRecordWriter(path) as writer:
        for payload in payloads:
            writer.write(payload)


def test_masked_crc_known_value():
    # CRC-32C check value of "123456789" is 0xE3069283; the mask is TensorFlow's rotate-and-add.
    crc = 0xE3069283
    assert masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_location_scanner_short_entries():
    # Features of empty map entries are valid and hold no location; an entry cut off after its tag is malformed.
    for blob in (b"\x0a\x02\x0a\x00", b"\x0a\x04\x0a\x00\x0a\x00", b"\x0a\x00"):
        assert scan_locations(memoryview(bytearray(blob))) is None
    with pytest.raises(WireError):
        scan_locations(memoryview(bytearray(b"\x0a\x03\x0a\x00\x0a")))


def test_round_trip_tile_records(tile_tfrecord):
    path, tiles, locs = tile_tfrecord
    records = list(iter_records(path))
    assert [r["image_raw"] for r in records] == tiles
    assert {r["slide"] for r in records} == {"slide1"}
    assert [(r["loc_x"], r["loc_y"]) for r in records] == locs


def test_chunk_boundaries_do_not_matter(tmp_path, rng):
    payloads = [rng.bytes(int(n)) for n in rng.integers(0, 3000, size=50)] + [rng.bytes(70_000)]
    path = tmp_path / "x.tfrecords"
    write_payloads(path, payloads)
    for chunk in (13, 64, 1000, 4096, 1 << 20):
        got = [bytes(p) for _, _, p in scan_frames(path, chunk_size=chunk)]
        assert got == payloads


def _frame_offsets(payloads):
    offsets, position = [], 0
    for p in payloads:
        offsets.append(position)
        position += len(p) + 16
    return offsets


@pytest.fixture
def three_records(tmp_path):
    payloads = [tile_example(b"\xff\xd8\xff" + bytes(range(200)), "s", i, i) for i in range(3)]
    path = tmp_path / "three.tfrecords"
    write_payloads(path, payloads)
    return path, payloads, _frame_offsets(payloads)


def _damage(path, position, xor=0x01):
    data = bytearray(path.read_bytes())
    data[position] ^= xor
    path.write_bytes(bytes(data))


def test_corrupt_length(three_records):
    path, payloads, offsets = three_records
    _damage(path, offsets[1] + 2)
    with pytest.raises(errors.CorruptLengthError) as info:
        list(iter_records(path))
    assert info.value.record == 1 and info.value.offset == offsets[1]
    assert str(path) in str(info.value) and f"byte offset {offsets[1]}" in str(info.value)


def test_corrupt_payload(three_records):
    path, payloads, offsets = three_records
    _damage(path, offsets[2] + 12 + 40)
    with pytest.raises(errors.CorruptRecordError) as info:
        list(iter_records(path))
    assert (info.value.record, info.value.offset) == (2, offsets[2])


def test_truncated_last_record(three_records):
    path, payloads, offsets = three_records
    data = path.read_bytes()
    path.write_bytes(data[:-5])
    with pytest.raises(errors.TruncatedRecordError) as info:
        list(iter_records(path))
    assert (info.value.record, info.value.offset) == (2, offsets[2])


def test_truncated_inside_header(three_records):
    path, payloads, offsets = three_records
    path.write_bytes(path.read_bytes()[: offsets[2] + 5])
    with pytest.raises(errors.TruncatedRecordError):
        list(iter_records(path))


def test_empty_file(tmp_path):
    path = tmp_path / "empty.tfrecords"
    path.write_bytes(b"")
    with pytest.raises(errors.EmptyTFRecordError, match="empty"):
        list(iter_records(path))


@pytest.mark.parametrize(
    "content",
    [b"this is a CSV file,\nnot,a,tfrecord\n" * 10, b"\x1f\x8b\x08\x00" + bytes(100), b"short"],
)
def test_not_a_tfrecord(tmp_path, content):
    path = tmp_path / "other.tfrecords"
    path.write_bytes(content)
    with pytest.raises(errors.NotATFRecordError) as info:
        list(iter_records(path))
    assert info.value.offset == 0
    if content.startswith(b"\x1f\x8b"):
        assert "GZIP" in str(info.value)


def test_error_classes_are_distinct():
    classes = [
        errors.CorruptLengthError,
        errors.CorruptRecordError,
        errors.TruncatedRecordError,
        errors.EmptyTFRecordError,
        errors.NotATFRecordError,
        errors.InvalidExampleError,
    ]
    assert len(set(classes)) == len(classes)
    assert all(issubclass(c, errors.TFRecordError) for c in classes)
    assert not any(issubclass(a, b) for a in classes for b in classes if a is not b)


def test_invalid_example_payload(tmp_path):
    path = tmp_path / "junk.tfrecords"
    write_payloads(path, [b"\xff\xff\xff\xff"])
    with pytest.raises(errors.InvalidExampleError) as info:
        list(iter_records(path))
    assert info.value.record == 0


def test_verify_lists_every_damaged_payload(tmp_path):
    payloads = [tile_example(bytes(100), "s", i, i) for i in range(5)]
    path = tmp_path / "v.tfrecords"
    write_payloads(path, payloads)
    offsets = _frame_offsets(payloads)
    for i in (1, 3):
        _damage(path, offsets[i] + 30)
    report = verify_tfrecord(path)
    assert not report.ok and report.records == 3
    assert [e.offset for e in report.errors] == [offsets[1], offsets[3]]
    assert all(isinstance(e, errors.CorruptRecordError) for e in report.errors)


def test_writer_is_atomic(tmp_path):
    target = tmp_path / "out.tfrecords"
    with pytest.raises(RuntimeError):
        with TFRecordWriter(target) as writer:
            writer.write(b"abc")
            raise RuntimeError("interrupted")
    assert not target.exists()
    assert os.listdir(tmp_path) == []


def test_writer_killed_leaves_no_file(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    target = tmp_path / "killed.tfrecords"
    script = (
        "import sys, time\n"
        "from slidetiles.io.writer import TFRecordWriter\n"
        "w = TFRecordWriter(sys.argv[1])\n"
        "w.write(b'x' * 1000); w._file.flush()\n"
        "print('written', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "written"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(0.1)
    assert not target.exists()


# -- property tests ---------------------------------------------------------------------------------------------------
records_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "image_raw": st.binary(max_size=3000),
            "slide": st.text(max_size=20),
            "loc_x": st.integers(-(2**63), 2**63 - 1),
            "loc_y": st.integers(-(2**63), 2**63 - 1),
        }
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=records_strategy)
def test_random_records_round_trip(tmp_path, records):
    path = tmp_path / "prop.tfrecords"
    write_payloads(path, [tile_example(**r) for r in records])
    assert list(iter_records(path)) == records
    assert [scan_locations(tile_example(**r)) for r in records] == [(r["loc_x"], r["loc_y"]) for r in records]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.lists(st.integers(0, 300), min_size=1, max_size=4),
    data=st.data(),
)
def test_any_flipped_bit_is_detected(tmp_path, sizes, data):
    payloads = [bytes([i % 251 for i in range(n)]) for n in sizes]
    path = tmp_path / "flip.tfrecords"
    write_payloads(path, payloads)
    raw = bytearray(path.read_bytes())
    position = data.draw(st.integers(0, len(raw) - 1), label="byte")
    bit = data.draw(st.integers(0, 7), label="bit")
    raw[position] ^= 1 << bit
    path.write_bytes(bytes(raw))
    with pytest.raises(errors.TFRecordError):
        list(scan_frames(path))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=400), verify=st.booleans())
def test_random_bytes_raise_only_tfrecord_errors(tmp_path, blob, verify):
    path = tmp_path / "random.tfrecords"
    path.write_bytes(blob)
    try:
        records = list(iter_records(path, verify=verify))
    except errors.TFRecordError as error:
        assert error.path == str(path)  # whatever the damage, the error names the file
    else:
        assert all(isinstance(record, dict) for record in records)


@settings(max_examples=300, deadline=None)
@given(blob=st.binary(max_size=200))
def test_location_scanner_on_random_bytes(blob):
    try:
        result = scan_locations(memoryview(bytearray(blob)))
    except WireError:
        return
    assert result is None or len(result) == 2


@settings(max_examples=100, deadline=None)
@given(
    extra=st.dictionaries(st.text(min_size=1, max_size=8), st.one_of(st.binary(max_size=50), st.integers(0, 10**6))),
    x=st.integers(-(2**31), 2**31),
    y=st.integers(-(2**31), 2**31),
)
def test_location_scanner_with_other_features(extra, x, y):
    features = {k: v for k, v in extra.items() if k not in ("loc_x", "loc_y")}
    features.update(loc_x=x, loc_y=y)
    assert scan_locations(memoryview(bytearray(build_example(features)))) == (x, y)


# -- the direct tile-record path agrees with the generic one ------------------------------------------------------
from slidetiles.io.example import Example, _feature_dict, _ordered, parse_example  # noqa: E402

feature_values = st.one_of(
    st.binary(max_size=40),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, width=32),
    st.lists(st.binary(max_size=10), min_size=1, max_size=4),
    st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=4),
    st.lists(st.floats(allow_nan=False, width=32), min_size=1, max_size=4),
)
tile_keys = st.sampled_from(["image_raw", "slide", "loc_x", "loc_y", "other"])


@settings(max_examples=300, deadline=None)
@given(features=st.dictionaries(st.one_of(tile_keys, st.text(max_size=10)), feature_values, max_size=6))
def test_parse_example_matches_generic_walk(features):
    payload = build_example(features)
    expected = _ordered(_feature_dict(Example.FromString(payload).features.feature))
    assert parse_example(payload, decode_slide=False) == expected


def test_tile_records_are_byte_identical_across_processes(tmp_path):
    """Map order must not depend on the process (hash seeds, allocation): same tiles, same TFRecord bytes."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from slidetiles.io.writer import TFRecordWriter\n"
        "with TFRecordWriter(sys.argv[1]) as w:\n"
        "    for i in range(20):\n"
        "        w.write_tile(bytes([i]) * 50, 'slide', i * 299, 7)\n"
    )
    digests = set()
    for seed in ("1", "2", "3"):
        path = tmp_path / f"{seed}.tfrecords"
        subprocess.run([sys.executable, "-c", script, str(path)], check=True, env={**os.environ, "PYTHONHASHSEED": seed})
        digests.add(path.read_bytes())
    assert len(digests) == 1


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    from slidetiles.io.writer import atomic_write

    target = tmp_path / "manifest.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as f:
            f.write("half of the new")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["manifest.json"]
    with atomic_write(target, "w", fsync=True, keep_mode=True) as f:
        f.write("new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["manifest.json"]
