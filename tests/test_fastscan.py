"""The C index builder (slidetiles.io._fastscan + fastscan.py) against the pure-Python one.

The fast path must never accept what the Python path rejects, nor report other locations: every file here is
indexed both ways and the outcomes (arrays, or exception class, message, record and offset) must be identical.
"""

import contextlib
import os
import struct
import threading

import crc32c
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slidetiles import errors
from slidetiles.io import fastscan, tfrecord2idx
from slidetiles.io.example import WireError, build_example, parse_example, scan_locations, tile_example
from slidetiles.io.framing import encode_frame, masked_crc32c

from helpers import write_tiles

_fastscan = fastscan._fastscan
needs_c = pytest.mark.skipif(
    _fastscan is None,
    reason="slidetiles.io._fastscan was not compiled (no C compiler when slidetiles was installed); "
    "index builds use the pure-Python path, which the other tests cover",
)
pytestmark = needs_c

# Small chunks make records straddle chunk boundaries, outgrow the space kept for a tail, and span several chunks.
FAST_VARIANTS = [
    dict(chunk_size=12, threaded=False),
    dict(chunk_size=100, threaded=False),
    dict(chunk_size=4096, threaded=False),
    dict(chunk_size=100, threaded=True),
    dict(),
]


@contextlib.contextmanager
def pure_python():
    old = os.environ.get("SLIDETILES_PURE_PYTHON")
    os.environ["SLIDETILES_PURE_PYTHON"] = "1"
    try:
        yield
    finally:
        if old is None:
            del os.environ["SLIDETILES_PURE_PYTHON"]
        else:
            os.environ["SLIDETILES_PURE_PYTHON"] = old


def outcome(function):
    try:
        arr_0, locations = function()
    except errors.TFRecordError as exc:
        return ("error", type(exc), str(exc), exc.record, exc.offset)
    except OverflowError:  # a location beyond int64: both paths fail alike when building the array
        return ("overflow",)
    assert arr_0.dtype == np.int64 and arr_0.ndim == 2 and arr_0.shape[1] == 2
    if locations is not None:
        assert locations.dtype == np.int64 and locations.shape == arr_0.shape
    return ("ok", arr_0.tolist(), None if locations is None else locations.tolist())


def pure_outcome(path, verify=True):
    def run():
        index = tfrecord2idx.build_index(path, verify=verify)
        return index.arr_0, index.locations

    with pure_python():
        assert not fastscan.available()
        return outcome(run)


def assert_same(path, verify=True, variants=FAST_VARIANTS):
    """Index ``path`` both ways; returns the (common) outcome."""
    expected = pure_outcome(path, verify)
    for variant in variants:
        got = outcome(lambda: fastscan.build_index_fast(path, verify=verify, **variant))
        assert got == expected, (variant, verify)
    return expected


def write_payloads(path, payloads):
    with open(path, "wb") as f:
        for payload in payloads:
            f.write(encode_frame(payload))
    return str(path)


def frame_offsets(payloads):
    offsets, position = [], 0
    for payload in payloads:
        offsets.append(position)
        position += len(payload) + 16
    return offsets


# -- CRC-32C ----------------------------------------------------------------------------------------------------------
def test_crc_implementations_listed():
    assert _fastscan.crc_implementations[0] == "slice-by-8"
    assert _fastscan.crc_implementation == _fastscan.crc_implementations[-1]
    with pytest.raises(ValueError):
        _fastscan.crc32c_using("no-such-thing", b"")


def test_crc_every_length_and_alignment():
    data = np.random.default_rng(5).bytes(4096 + 64)
    view = memoryview(data)
    for impl in _fastscan.crc_implementations:
        for offset in (0, 1, 3, 8, 13, 63):
            for n in range(0, 4097, 1 if offset in (0, 13) else 7):
                chunk = view[offset : offset + n]
                assert _fastscan.crc32c_using(impl, chunk) == crc32c.crc32c(chunk), (impl, offset, n)


def test_crc_block_boundaries_and_large_buffers():
    rng = np.random.default_rng(6)
    data = rng.bytes(300_000)
    view = memoryview(data)
    # Around the three-stream block sizes (3 x 4096, 3 x 256) and the 256-byte folding step and its 1024 threshold.
    sizes = {b * m + d for b in (256, 768, 1024, 12288) for m in (1, 2, 3, 5) for d in range(-17, 18)}
    sizes |= {100_000, 299_937}
    for impl in _fastscan.crc_implementations:
        for n in sorted(sizes):
            offset = n % 61
            value = (n * 2654435761) & 0xFFFFFFFF
            chunk = view[offset : offset + n]
            assert _fastscan.crc32c_using(impl, chunk, value) == crc32c.crc32c(chunk, value), (impl, n)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=6000), offset=st.integers(0, 63), value=st.integers(0, 2**32 - 1))
def test_crc_matches_crc32c_package(data, offset, value):
    buf = bytearray(offset) + bytearray(data)
    chunk = memoryview(buf)[offset:]
    expected = crc32c.crc32c(chunk, value)
    for impl in _fastscan.crc_implementations:
        assert _fastscan.crc32c_using(impl, chunk, value) == expected, impl
    assert _fastscan.crc32c(chunk, value) == expected
    assert _fastscan.masked_crc32c(chunk) == masked_crc32c(chunk)


# -- the C location scanner answers only where Python answers the same ---------------------------------------------
def check_locations(payload):
    """C's answer is None (Python decides) or exactly Python's; returns C's answer."""
    got = _fastscan.scan_locations(payload)
    if got is not None:
        assert scan_locations(memoryview(bytearray(payload))) == got
    return got


@settings(max_examples=300, deadline=None)
@given(blob=st.binary(max_size=200))
def test_c_location_scanner_on_random_bytes(blob):
    check_locations(blob)
    check_locations(b"\x0a" + bytes([len(blob)]) + blob if len(blob) < 128 else blob)


int64s = st.integers(-(2**63), 2**63 - 1)


@settings(max_examples=200, deadline=None)
@given(
    extra=st.dictionaries(
        st.text(min_size=1, max_size=8),
        st.one_of(st.binary(max_size=300), int64s, st.floats(allow_nan=False, width=32), st.lists(int64s, min_size=1, max_size=3)),
        max_size=5,
    ),
    x=int64s,
    y=int64s,
)
def test_c_location_scanner_reads_what_writers_write(extra, x, y):
    features = {k: v for k, v in extra.items() if k not in ("loc_x", "loc_y")}
    features.update(loc_x=x, loc_y=y)
    # What our writer and TensorFlow's produce is the fast path: C must answer, and answer right.
    assert check_locations(build_example(features)) == (x, y)
    assert check_locations(tile_example(b"\xff\xd8" * 2000, "slide", x, y)) == (x, y)


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def delimited(tag, body):
    return bytes([tag]) + varint(len(body)) + body


def entry(key, feature, key_first=True):
    parts = [delimited(0x0A, key), delimited(0x12, feature)]
    return delimited(0x0A, b"".join(parts if key_first else parts[::-1]))


def int64_feature(*values, packed=True):
    if packed:
        inner = delimited(0x0A, b"".join(varint(v & (2**64 - 1)) for v in values))
    else:
        inner = b"".join(b"\x08" + varint(v & (2**64 - 1)) for v in values)
    return delimited(0x1A, inner)


def bytes_feature(value):
    return delimited(0x0A, delimited(0x0A, value))


def example(*entries):
    return delimited(0x0A, b"".join(entries))


IMAGE = entry(b"image_raw", bytes_feature(b"\xff\xd8" + bytes(300)))
SLIDE = entry(b"slide", bytes_feature(b"s1"))

def padded(n):
    """``n`` as a two-byte varint (valid, though no writer pads)."""
    return bytes([0x80 | (n & 0x7F), n >> 7])


def padded_example(*features):
    entries = b""
    for key, value in features:
        body = delimited(0x0A, key) + delimited(0x12, int64_feature(value))
        entries += b"\x0a" + padded(len(body)) + body
    return b"\x0a" + padded(len(entries)) + entries


_LOCS = entry(b"loc_x", int64_feature(1)) + entry(b"loc_y", int64_feature(2))

#: Layouts the C scanner reads itself, with the answer Python's scanner gives.
FAST = {
    "tile record": (example(IMAGE, SLIDE, _LOCS), (1, 2)),
    "negative": (example(entry(b"loc_x", int64_feature(-5)), entry(b"loc_y", int64_feature(-(2**63)))), (-5, -(2**63))),
    "several values": (example(entry(b"loc_x", int64_feature(5, 7)), entry(b"loc_y", int64_feature(6, 8))), (5, 6)),
    "duplicate key": (example(_LOCS, entry(b"loc_x", int64_feature(3))), (3, 2)),
    "padded lengths": (padded_example((b"loc_x", 7), (b"label", 1), (b"loc_y", -7)), (7, -7)),
    "other 5-byte keys": (example(entry(b"loc_z", int64_feature(9)), _LOCS, entry(b"label", int64_feature(4))), (1, 2)),
}

#: Valid Examples in layouts the C scanner hands to Python, and malformed ones.
UNUSUAL = {
    "unpacked values": example(IMAGE, entry(b"loc_x", int64_feature(5, packed=False)), entry(b"loc_y", int64_feature(6))),
    "value before key": example(IMAGE, entry(b"loc_x", int64_feature(5), key_first=False), entry(b"loc_y", int64_feature(6))),
    "unknown Example field": b"\x10\x01" + example(IMAGE, _LOCS),
    "float loc": example(entry(b"loc_x", delimited(0x12, delimited(0x0A, struct.pack("<f", 1.5)))), entry(b"loc_y", int64_feature(2))),
    "empty packed list": example(entry(b"loc_x", delimited(0x1A, delimited(0x0A, b""))), entry(b"loc_y", int64_feature(2))),
    "empty packed list, then values": example(
        entry(b"loc_x", delimited(0x1A, delimited(0x0A, b"") + delimited(0x0A, b"\x05"))), entry(b"loc_y", int64_feature(2))
    ),
    "no loc_y": example(IMAGE, SLIDE, entry(b"loc_x", int64_feature(1))),
    "no locations": example(IMAGE, SLIDE),
    "empty Example": b"",
    "beyond int64": example(entry(b"loc_x", delimited(0x1A, delimited(0x0A, b"\xff" * 9 + b"\x7f"))), entry(b"loc_y", int64_feature(2))),
    "eleven-byte varint": example(entry(b"loc_x", delimited(0x1A, delimited(0x0A, b"\xff" * 10 + b"\x01"))), entry(b"loc_y", int64_feature(2))),
    "entry overruns": b"\x0a\x05\x0a\x09\x0a\x05loc_x",
    "not a message": b"\xff\xff\xff\xff",
    "truncated varint": b"\x0a\x80",
}


@pytest.mark.parametrize("name", sorted(FAST))
def test_odd_but_valid_layouts_read_in_c(name):
    payload, expected = FAST[name]
    python = scan_locations(memoryview(bytearray(payload)))
    assert expected is None or python == expected
    assert check_locations(payload) == python and python is not None


@pytest.mark.parametrize("name", sorted(UNUSUAL))
def test_unusual_layouts_go_to_python(name):
    payload = UNUSUAL[name]
    assert _fastscan.scan_locations(payload) is None
    try:
        scan_locations(memoryview(bytearray(payload)))
    except WireError:
        pass


# -- the C tile parser answers only where protobuf answers the same ------------------------------------------------
def check_tile(payload):
    """C's answer is None (protobuf decides) or exactly what parsing with upb gives; returns C's answer."""
    got = _fastscan.tile_fields(payload)
    if got is not None:
        parsed = parse_example(bytes(payload), decode_slide=False)
        assert sorted(parsed) == ["image_raw", "loc_x", "loc_y", "slide"]
        assert got == (parsed["image_raw"], parsed["loc_x"], parsed["loc_y"])
        assert type(got[0]) is bytes
    return got


@settings(max_examples=300, deadline=None)
@given(blob=st.binary(max_size=200))
def test_c_tile_parser_on_random_bytes(blob):
    check_tile(blob)
    check_tile(b"\x0a" + bytes([len(blob)]) + blob if len(blob) < 128 else blob)


@settings(max_examples=200, deadline=None)
@given(image=st.binary(max_size=3000), slide=st.text(max_size=20), x=int64s, y=int64s,
       extra=st.dictionaries(st.sampled_from(["label", "loc_z", "image"]), st.one_of(st.binary(max_size=30), int64s),
                             max_size=2))
def test_c_tile_parser_reads_what_writers_write(image, slide, x, y, extra):
    # Slideflow's four features, as our writer and TensorFlow's serialise them: C must answer, and answer right.
    assert check_tile(tile_example(image, slide, x, y)) == (image, x, y)
    assert check_tile(build_example({"image_raw": image, "slide": slide.encode(), "loc_x": x, "loc_y": y})) == (image, x, y)
    if extra:  # any other feature set is protobuf's to parse
        assert check_tile(build_example({"image_raw": image, "slide": slide.encode(), "loc_x": x, "loc_y": y, **extra})) is None


TILE = example(IMAGE, SLIDE, _LOCS)
#: Tile-like records the C parser must hand to protobuf (valid ones protobuf reads, and malformed ones).
UNUSUAL_TILES = {
    **UNUSUAL,
    "duplicate key": example(IMAGE, SLIDE, _LOCS, entry(b"loc_x", int64_feature(3))),
    "two images": example(entry(b"image_raw", delimited(0x0A, delimited(0x0A, b"a") + delimited(0x0A, b"b"))), SLIDE, _LOCS),
    "two locations": example(IMAGE, SLIDE, entry(b"loc_x", int64_feature(5, 7)), entry(b"loc_y", int64_feature(6))),
    "fifth feature": example(IMAGE, SLIDE, _LOCS, entry(b"label", int64_feature(1))),
    "no slide": example(IMAGE, _LOCS),
    "image as int64": example(entry(b"image_raw", int64_feature(1)), SLIDE, _LOCS),
    "location as bytes": example(IMAGE, SLIDE, entry(b"loc_x", bytes_feature(b"1")), entry(b"loc_y", int64_feature(2))),
    "unpacked locations": example(IMAGE, SLIDE, entry(b"loc_x", int64_feature(1, packed=False)), entry(b"loc_y", int64_feature(2))),
    "two features messages": TILE + TILE,
    "trailing field": TILE + b"\x10\x01",
    "value before key": example(entry(b"image_raw", bytes_feature(b"\xff\xd8"), key_first=False), SLIDE, _LOCS),
    "cut short": TILE[:-1],
}


@pytest.mark.parametrize("name", sorted(UNUSUAL_TILES))
def test_unusual_tile_records_go_to_protobuf(name):
    assert _fastscan.tile_fields(UNUSUAL_TILES[name]) is None


def test_c_tile_parser_reads_a_tile_record():
    assert check_tile(TILE) == (b"\xff\xd8" + bytes(300), 1, 2)
    assert check_tile(memoryview(bytearray(b"xx" + TILE))[2:]) == (b"\xff\xd8" + bytes(300), 1, 2)  # any buffer


# -- index builds: same arrays, same errors ---------------------------------------------------------------------------
def test_tile_records_with_and_without_locations(tmp_path, jpeg_tiles):
    path = str(tmp_path / "with.tfrecords")
    locs = write_tiles(path, jpeg_tiles)
    result = assert_same(path)
    assert result[0] == "ok" and result[2] == [list(xy) for xy in locs]
    assert result[1] == tfrecord2idx.build_index(path).arr_0.tolist()
    path = str(tmp_path / "without.tfrecords")
    write_tiles(path, jpeg_tiles, locations=False)
    result = assert_same(path)
    assert result[0] == "ok" and result[2] is None


def test_locations_stop_at_first_record_without(tmp_path, jpeg_tiles):
    payloads = [tile_example(t, "s", i, i) for i, t in enumerate(jpeg_tiles[:4])]
    payloads.insert(2, tile_example(jpeg_tiles[5], "s"))
    # After a record without locations nothing more is scanned: a later malformed payload is not noticed.
    payloads.append(b"\xff\xff\xff")
    assert assert_same(write_payloads(tmp_path / "mixed.tfrecords", payloads))[2] is None


def test_sizes_around_and_beyond_the_chunk(tmp_path):
    rng = np.random.default_rng(11)
    sizes = [0, 1, 5, 80, 99, 100, 101, 5000, 70_000, 3, 600_000, 12, 4096, 4080, 4081]
    payloads = [tile_example(rng.bytes(n), "s", int(n), -int(n)) for n in sizes]
    path = write_payloads(tmp_path / "sizes.tfrecords", payloads)
    result = assert_same(path, variants=FAST_VARIANTS + [dict(chunk_size=65536, threaded=True)])
    assert result[0] == "ok" and [row[0] for row in result[2]] == sizes
    assert [row[0] for row in result[1]] == frame_offsets(payloads)


def test_records_as_tensorflow_writes_them(tmp_path):
    """Extra features (labels, floats, lists), in any map order, around the locations."""
    rng = np.random.default_rng(12)
    payloads = []
    for i in range(30):
        features = {
            "label": int(rng.integers(0, 5)),
            "image_raw": rng.bytes(int(rng.integers(0, 3000))),
            "slide": "slide_α",
            "loc_y": int(rng.integers(-(2**40), 2**40)),
            "score": [0.5, float(i)],
            "loc_x": int(rng.integers(0, 2**40)),
            "tags": [b"a", b"bc"],
        }
        names = list(features)
        rng.shuffle(names)
        payloads.append(build_example({name: features[name] for name in names}))
    assert assert_same(write_payloads(tmp_path / "tf.tfrecords", payloads))[0] == "ok"


@pytest.mark.parametrize("name", sorted(UNUSUAL) + sorted(FAST))
def test_unusual_layouts_index_alike(tmp_path, name):
    good = [tile_example(b"img", "s", 1, 2), tile_example(b"img2", "s", 3, 4)]
    odd = UNUSUAL[name] if name in UNUSUAL else FAST[name][0]
    for payloads in ([odd] + good, good + [odd] * 3 + good):
        path = write_payloads(tmp_path / "u.tfrecords", payloads)
        for verify in (True, False):
            assert_same(path, verify)


@pytest.fixture
def small_file(tmp_path):
    payloads = [tile_example(b"\xff\xd8" + bytes(range(i, i + 30)), "s", i, 10 - i) for i in range(3)]
    payloads.insert(1, b"")
    return write_payloads(tmp_path / "small.tfrecords", payloads), payloads


def test_every_flipped_bit_fails_alike(small_file):
    path, payloads = small_file
    raw = bytearray(open(path, "rb").read())
    variants = [dict(chunk_size=12), dict(chunk_size=64, threaded=True), dict()]
    kinds = set()
    for position in range(len(raw)):
        for bit in (position % 8,):
            damaged = bytearray(raw)
            damaged[position] ^= 1 << bit
            with open(path, "wb") as f:
                f.write(damaged)
            for verify in (True, False):
                result = assert_same(path, verify, variants)
                kinds.add((verify, result[0] if result[0] != "error" else result[1].__name__))
    # Length, payload and CRC fields were all hit, with and without verification.
    assert {(True, "CorruptLengthError"), (True, "CorruptRecordError"), (True, "NotATFRecordError")} <= kinds
    assert (False, "TruncatedRecordError") in kinds and (False, "ok") in kinds
    assert (True, "ok") not in kinds


def test_every_truncation_fails_alike(small_file):
    path, payloads = small_file
    raw = open(path, "rb").read()
    for cut in range(len(raw) + 1):
        with open(path, "wb") as f:
            f.write(raw[:cut])
        result = assert_same(path, True, [dict(chunk_size=12), dict(chunk_size=100), dict()])
        assert result[0] == "ok" if cut in frame_offsets(payloads)[1:] + [len(raw)] else result[0] == "error"


@pytest.mark.parametrize(
    "content",
    [b"", b"short", b"this is a CSV file,\nnot,a,tfrecord\n" * 10, b"\x1f\x8b\x08\x00" + bytes(100), bytes(40)],
)
def test_not_a_tfrecord_alike(tmp_path, content):
    path = tmp_path / "other.tfrecords"
    path.write_bytes(content)
    for verify in (True, False):
        result = assert_same(str(path), verify)
        assert result[0] == "error"
    assert result[4] == (None if not content else 0 if content != bytes(40) else 32)  # unverified: 2 empty records
    assert assert_same(str(path))[4] == (None if not content else 0)
    if content.startswith(b"\x1f\x8b"):
        assert "GZIP" in assert_same(str(path))[2]


def test_damage_in_a_large_file(tmp_path, jpeg_tiles):
    """Errors past the first chunk, in a record that straddles chunks, name the same record and offset."""
    payloads = [tile_example(jpeg_tiles[i % 12] * 40, "s", i, i) for i in range(40)]
    path = write_payloads(tmp_path / "big.tfrecords", payloads)
    offsets = frame_offsets(payloads)
    raw = open(path, "rb").read()
    cases = [
        (offsets[25] + 3, "CorruptLengthError"),
        (offsets[31] + 12 + len(payloads[31]) // 2, "CorruptRecordError"),
        (offsets[18] - 2, "CorruptRecordError"),  # the data CRC of record 17
    ]
    variants = [dict(chunk_size=4096), dict(chunk_size=65536, threaded=True), dict(chunk_size=65536), dict()]
    for position, kind in cases:
        damaged = bytearray(raw)
        damaged[position] ^= 0x10
        with open(path, "wb") as f:
            f.write(damaged)
        result = assert_same(path, True, variants)
        assert result[1].__name__ == kind
    with open(path, "wb") as f:
        f.write(raw[: offsets[33] + 1000])
    assert assert_same(path, True, variants)[1] is errors.TruncatedRecordError


frames = st.lists(
    st.one_of(
        st.builds(lambda b, x, y: tile_example(b, "s", x, y), st.binary(max_size=300), int64s, int64s),
        st.builds(lambda b: tile_example(b, "s"), st.binary(max_size=50)),
        st.binary(max_size=60),
        st.sampled_from(sorted(UNUSUAL.values()) + sorted(v[0] for v in FAST.values())),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payloads=frames, data=st.data())
def test_random_files_index_alike(tmp_path, payloads, data):
    raw = bytearray(b"".join(encode_frame(p) for p in payloads))
    damage = data.draw(st.sampled_from(["none", "flip", "cut", "garbage", "noise"]), label="damage")
    if damage == "flip":
        raw[data.draw(st.integers(0, len(raw) - 1), label="byte")] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    elif damage == "cut":
        raw = raw[: data.draw(st.integers(0, len(raw)), label="cut")]
    elif damage == "garbage":
        raw += data.draw(st.binary(min_size=1, max_size=40), label="garbage")
    elif damage == "noise":
        raw = bytearray(data.draw(st.binary(max_size=200), label="noise"))
    path = tmp_path / "random.tfrecords"
    path.write_bytes(bytes(raw))
    for verify in (True, False):
        assert_same(str(path), verify, [dict(chunk_size=13), dict(chunk_size=64, threaded=True), dict()])


# -- wiring -----------------------------------------------------------------------------------------------------------
def test_build_index_takes_the_fast_path_unless_disabled(tile_tfrecord, monkeypatch):
    monkeypatch.delenv("SLIDETILES_PURE_PYTHON", raising=False)  # the suite may run with it set
    path = tile_tfrecord[0]
    calls = []
    real = fastscan.build_index_fast
    monkeypatch.setattr(fastscan, "build_index_fast", lambda *a, **k: calls.append(a) or real(*a, **k))
    hardware_crc = _fastscan.crc_implementation != "slice-by-8"
    fast = tfrecord2idx.build_index(path, verify=False)
    assert len(calls) == 1
    fast = tfrecord2idx.build_index(path)
    assert len(calls) == 1 + hardware_crc
    with pure_python():
        pure = tfrecord2idx.build_index(path)
    assert len(calls) == 1 + hardware_crc
    assert np.array_equal(fast.arr_0, pure.arr_0) and np.array_equal(fast.locations, pure.locations)
    assert fast.built_from == pure.built_from and fast.path is pure.path is None
    for value, expected in (("1", False), ("0", True), ("", True)):
        monkeypatch.setenv("SLIDETILES_PURE_PYTHON", value)
        assert fastscan.available(verify=False) is expected
        assert fastscan.available() is (expected and hardware_crc)


def test_reader_thread_stops_on_errors(tmp_path, jpeg_tiles):
    payloads = [tile_example(jpeg_tiles[i % 12], "s", i, i) for i in range(30)]
    path = write_payloads(tmp_path / "t.tfrecords", payloads)
    raw = bytearray(open(path, "rb").read())
    raw[frame_offsets(payloads)[3] + 100] ^= 1
    with open(path, "wb") as f:
        f.write(raw)
    before = threading.active_count()
    for _ in range(5):
        with pytest.raises(errors.CorruptRecordError):
            fastscan.build_index_fast(path, chunk_size=1000, threaded=True)
    assert threading.active_count() == before


def test_scan_checks_its_arguments():
    with pytest.raises(ValueError):
        _fastscan.scan(bytearray(10), 5, 4, 0, True, True)
    with pytest.raises(ValueError):
        _fastscan.scan(bytearray(10), 0, 11, 0, True, True)
    assert _fastscan.scan(b"", 0, 0, 0, True, True) == (0, b"", _fastscan.STOP_NEED_HEADER)


def test_gil_is_released_during_a_scan(tmp_path):
    """Two threads indexing at once both finish with the right answer (the walk runs without the GIL)."""
    payloads = [tile_example(bytes(20_000), "s", i, i) for i in range(200)]
    path = write_payloads(tmp_path / "g.tfrecords", payloads)
    expected = pure_outcome(path)
    results = []
    threads = [threading.Thread(target=lambda: results.append(outcome(lambda: fastscan.build_index_fast(path)))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 4
