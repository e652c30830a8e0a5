"""The ``tf.train.Example`` message, without TensorFlow.

The message classes come from protobuf's own runtime (upb): we describe TensorFlow's ``example.proto`` /
``feature.proto`` in a private descriptor pool (same field numbers, so the bytes are wire-identical) instead of
shipping generated ``_pb2`` code, which breaks whenever the installed protobuf major version changes. The private
pool also keeps us clear of TensorFlow's own ``tensorflow.Example`` when both are imported in one process.

Reading a record into a dict goes through upb. Building an index only needs ``loc_x``/``loc_y``, so
:func:`scan_locations` walks the wire format by hand and jumps over the image bytes by their length prefix: no
parser in a library offers "decode these two fields and skip the rest", and a full parse would copy every image.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

# WireError lives in slidetiles.errors with the others; importing it from here still works.
from slidetiles.errors import InvalidExampleError, WireError

_FDP = descriptor_pb2.FieldDescriptorProto


def _build_message_classes():
    file_proto = descriptor_pb2.FileDescriptorProto(
        name="slidetiles/tensorflow_example.proto", package="tensorflow", syntax="proto3"
    )

    def message(name):
        msg = file_proto.message_type.add()
        msg.name = name
        return msg

    def field(msg, name, number, ftype, label=_FDP.LABEL_OPTIONAL, type_name=None, oneof_index=None, packed=None):
        f = msg.field.add(name=name, number=number, type=ftype, label=label)
        if type_name:
            f.type_name = type_name
        if oneof_index is not None:
            f.oneof_index = oneof_index
        if packed is not None:
            f.options.packed = packed
        return f

    field(message("BytesList"), "value", 1, _FDP.TYPE_BYTES, _FDP.LABEL_REPEATED)
    field(message("FloatList"), "value", 1, _FDP.TYPE_FLOAT, _FDP.LABEL_REPEATED, packed=True)
    field(message("Int64List"), "value", 1, _FDP.TYPE_INT64, _FDP.LABEL_REPEATED, packed=True)

    feature = message("Feature")
    feature.oneof_decl.add(name="kind")
    field(feature, "bytes_list", 1, _FDP.TYPE_MESSAGE, type_name=".tensorflow.BytesList", oneof_index=0)
    field(feature, "float_list", 2, _FDP.TYPE_MESSAGE, type_name=".tensorflow.FloatList", oneof_index=0)
    field(feature, "int64_list", 3, _FDP.TYPE_MESSAGE, type_name=".tensorflow.Int64List", oneof_index=0)

    features = message("Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    field(entry, "key", 1, _FDP.TYPE_STRING)
    field(entry, "value", 2, _FDP.TYPE_MESSAGE, type_name=".tensorflow.Feature")
    field(features, "feature", 1, _FDP.TYPE_MESSAGE, _FDP.LABEL_REPEATED, type_name=".tensorflow.Features.FeatureEntry")

    field(message("Example"), "features", 1, _FDP.TYPE_MESSAGE, type_name=".tensorflow.Features")

    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_proto)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.{name}"))
        for name in ("Example", "Features", "Feature", "BytesList", "FloatList", "Int64List")
    }


_CLASSES = _build_message_classes()
Example = _CLASSES["Example"]
Features = _CLASSES["Features"]
Feature = _CLASSES["Feature"]
BytesList = _CLASSES["BytesList"]
FloatList = _CLASSES["FloatList"]
Int64List = _CLASSES["Int64List"]

#: The features of a tile record, in the order Slideflow writes them.
TILE_FIELDS = ("image_raw", "slide", "loc_x", "loc_y")
_TILE_FIELD_SET = frozenset(TILE_FIELDS)


def tile_example(image_raw: bytes, slide: str | bytes, loc_x: int | None = None, loc_y: int | None = None) -> bytes:
    """Serialise one tile record with Slideflow's features (``image_raw``, ``slide``, optional ``loc_x``/``loc_y``).

    Serialised deterministically (map entries sorted by key): protobuf otherwise orders map entries differently in
    every process, and the same tiles must give byte-identical TFRecords on a laptop and on a SLURM node.
    """
    example = Example()
    feature = example.features.feature
    feature["image_raw"].bytes_list.value.append(bytes(image_raw))
    feature["slide"].bytes_list.value.append(slide.encode("utf-8") if isinstance(slide, str) else bytes(slide))
    if (loc_x is None) != (loc_y is None):
        raise ValueError("loc_x and loc_y must be given together")
    if loc_x is not None:
        feature["loc_x"].int64_list.value.append(int(loc_x))
        feature["loc_y"].int64_list.value.append(int(loc_y))
    return example.SerializeToString(deterministic=True)


def build_example(features: dict) -> bytes:
    """Serialise a generic Example from ``{name: value}``.

    ``bytes``/``str`` values become a one-element ``bytes_list``, ``int`` an ``int64_list``, ``float`` a
    ``float_list``; a list or tuple becomes a list of its elements' kind.
    """
    example = Example()
    target = example.features.feature
    for name, value in features.items():
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if not values:
            raise ValueError(f"feature {name!r}: an empty list has no type; leave the feature out instead")
        first = values[0]
        if isinstance(first, (bytes, bytearray, memoryview, str)):
            target[name].bytes_list.value.extend(v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in values)
        elif isinstance(first, bool) or not isinstance(first, (int, float)) and not hasattr(first, "__index__"):
            raise TypeError(f"feature {name!r}: unsupported value type {type(first).__name__}")
        elif isinstance(first, float):
            target[name].float_list.value.extend(float(v) for v in values)
        else:
            target[name].int64_list.value.extend(int(v) for v in values)
    return example.SerializeToString(deterministic=True)


def parse_example(payload, *, decode_slide: bool = True, path="<memory>", record=None, offset=None) -> dict:
    """Parse one serialised Example into a dict.

    A feature holding a single value is unwrapped (``loc_x`` -> ``int``, ``image_raw`` -> ``bytes``); longer lists
    stay lists. ``slide`` is decoded to ``str`` unless ``decode_slide=False``.
    """
    try:
        example = Example.FromString(payload)
    except Exception as exc:  # upb raises DecodeError; anything else is the same problem to the user
        raise InvalidExampleError(path, f"payload does not parse as a tf.train.Example ({exc})", record, offset) from None
    features = example.features.feature
    out = _tile_record(features)
    if out is None:
        out = _ordered(_feature_dict(features))
    if decode_slide and isinstance(out.get("slide"), bytes):
        try:
            out["slide"] = out["slide"].decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidExampleError(path, "the 'slide' feature is not valid UTF-8", record, offset) from None
    return out


def _tile_record(features) -> dict | None:
    """Slideflow's four tile features, one value each, read directly; None for any other shape.

    This is the hot path of every reader: the direct reads cost ~2 us less per record than the generic walk
    (upb's message wrappers are slow to step through). Membership is checked first because indexing a
    protobuf map inserts missing keys.
    """
    if len(features) != 4 or "image_raw" not in features or "slide" not in features:
        return None
    if "loc_x" not in features or "loc_y" not in features:
        return None
    image = features["image_raw"].bytes_list.value
    slide = features["slide"].bytes_list.value
    loc_x = features["loc_x"].int64_list.value
    loc_y = features["loc_y"].int64_list.value
    if len(image) != 1 or len(slide) != 1 or len(loc_x) != 1 or len(loc_y) != 1:
        return None
    return {"image_raw": image[0], "slide": slide[0], "loc_x": loc_x[0], "loc_y": loc_y[0]}


def _ordered(out: dict) -> dict:
    # Map order on the wire is unspecified; give dicts (and TFRecord.fields) a stable order: Slideflow's tile
    # features first, then any others by name.
    names = [name for name in TILE_FIELDS if name in out]
    names += sorted(name for name in out if name not in _TILE_FIELD_SET)
    return {name: out[name] for name in names}


def _feature_dict(features) -> dict:
    out = {}
    for name, feature in features.items():
        kind = feature.WhichOneof("kind")
        if kind is None:
            out[name] = None
            continue
        values = getattr(feature, kind).value
        out[name] = values[0] if len(values) == 1 else list(values)
    return out


_UINT64 = (1 << 64) - 1


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    # As protobuf reads a varint (upb, and so parse_example, TensorFlow and Slideflow): at most 10 bytes, and the
    # bits a 10th byte carries beyond 64 are dropped. Keeping them (a Python big int) made index builds fail with a
    # raw OverflowError on a record that every protobuf reader parses.
    result = 0
    shift = 0
    while True:
        if pos >= end or shift > 63:
            raise WireError("bad varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & _UINT64, pos
        shift += 7


def _skip_field(buf, pos: int, end: int, wire_type: int) -> int:
    if wire_type == 2:
        length, pos = _varint(buf, pos, end)
        pos += length
    elif wire_type == 0:
        _, pos = _varint(buf, pos, end)
    elif wire_type == 1:
        pos += 8
    elif wire_type == 5:
        pos += 4
    else:
        raise WireError(f"unsupported wire type {wire_type}")
    if pos > end:
        raise WireError("field runs past the end of its message")
    return pos


def _first_int64(buf, pos: int, end: int):
    """First value of a Feature holding an int64_list, or None if it holds another kind."""
    value = None
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        if tag == 0x1A:  # Feature.int64_list, length-delimited
            length, pos = _varint(buf, pos, end)
            list_end = pos + length
            if list_end > end:
                raise WireError("int64_list runs past its Feature")
            while pos < list_end:
                inner, pos = _varint(buf, pos, list_end)
                if inner == 0x0A:  # packed values
                    packed_len, pos = _varint(buf, pos, list_end)
                    if packed_len:
                        value, _ = _varint(buf, pos, pos + packed_len)
                        break
                    pos += packed_len
                elif inner == 0x08:  # one unpacked value
                    value, pos = _varint(buf, pos, list_end)
                    break
                else:
                    pos = _skip_field(buf, pos, list_end, inner & 7)
            pos = list_end
        else:
            pos = _skip_field(buf, pos, end, tag & 7)
    if value is not None and value >= 1 << 63:  # int64 is two's complement on the wire
        value -= 1 << 64
    return value


def scan_locations(buf) -> tuple[int, int] | None:
    """``(loc_x, loc_y)`` of a serialised tile Example, or None when it has no such features.

    Walks Example -> Features -> map entries and jumps over every entry whose key cannot be ``loc_x``/``loc_y``
    by its length prefix, so the cost does not depend on the image size (a full upb parse copies the image).
    This runs once per record when indexing, so the layout every writer we know produces (key first, short
    varints) is read inline; anything else takes the general path. Raises :class:`WireError` on malformed
    bytes; callers turn that into an :class:`InvalidExampleError` naming the file and record.
    """
    end = len(buf)
    if end < 2 or buf[0] != 0x0A:
        return _scan_locations_general(buf)
    length, pos = _varint(buf, 1, end)
    if pos + length != end:
        return _scan_locations_general(buf)
    loc_x = loc_y = None
    while pos < end:
        if buf[pos] != 0x0A or pos + 2 >= end:
            return _scan_locations_general(buf)
        b0 = buf[pos + 1]
        if b0 < 0x80:
            entry_end = pos + 2 + b0
            pos += 2
        else:
            length, pos = _varint(buf, pos + 1, end)
            entry_end = pos + length
        if entry_end > end:
            raise WireError("feature entry runs past the end of the record")
        # The key comes first in every writer we know; only a 5-byte key can be loc_x/loc_y.
        if entry_end - pos < 2 or buf[pos] != 0x0A:
            return _scan_locations_general(buf)
        if buf[pos + 1] != 5:
            pos = entry_end
            continue
        if entry_end - pos < 7:
            return _scan_locations_general(buf)
        key = buf[pos + 2 : pos + 7]
        value = pos + 7
        if key == b"loc_x" or key == b"loc_y":
            # Feature{int64_list{packed values}}: 0x12 len 0x1A len 0x0A len varint...
            if not (
                value + 6 <= entry_end
                and buf[value] == 0x12
                and buf[value + 2] == 0x1A
                and buf[value + 4] == 0x0A
                and buf[value + 5] > 0
            ):
                return _scan_locations_general(buf)
            number, _ = _varint(buf, value + 6, entry_end)
            if number >= 1 << 63:  # int64 is two's complement on the wire
                number -= 1 << 64
            if key == b"loc_x":
                loc_x = number
            else:
                loc_y = number
        pos = entry_end
    if pos != end:
        raise WireError("feature entry overruns the record")
    if loc_x is None or loc_y is None:
        return None
    return loc_x, loc_y


def _scan_locations_general(buf) -> tuple[int, int] | None:
    """:func:`scan_locations` for any valid encoding (unpacked values, fields in any order, long varints)."""
    end = len(buf)
    pos = 0
    loc = [None, None]
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        if tag != 0x0A:  # not Example.features: skip it
            pos = _skip_field(buf, pos, end, tag & 7)
            continue
        length, pos = _varint(buf, pos, end)
        features_end = pos + length
        if features_end > end:
            raise WireError("features run past the end of the record")
        while pos < features_end:
            tag, pos = _varint(buf, pos, features_end)
            if tag != 0x0A:  # not a map entry: skip it
                pos = _skip_field(buf, pos, features_end, tag & 7)
                continue
            length, pos = _varint(buf, pos, features_end)
            entry_end = pos + length
            if entry_end > features_end:
                raise WireError("feature entry runs past its Features")
            key = None
            value_span = None
            while pos < entry_end:
                tag, pos = _varint(buf, pos, entry_end)
                if tag == 0x0A or tag == 0x12:
                    length, pos = _varint(buf, pos, entry_end)
                    if pos + length > entry_end:
                        raise WireError("map entry field runs past its entry")
                    if tag == 0x0A:
                        key = bytes(buf[pos : pos + length])
                    else:
                        value_span = (pos, pos + length)
                    pos += length
                else:
                    pos = _skip_field(buf, pos, entry_end, tag & 7)
            if pos != entry_end:
                raise WireError("feature entry overruns its length")
            slot = 0 if key == b"loc_x" else 1 if key == b"loc_y" else None
            if slot is not None and value_span is not None:
                loc[slot] = _first_int64(buf, *value_span)
        if pos != features_end:
            raise WireError("features overrun their length")
    if loc[0] is None or loc[1] is None:
        return None
    return loc[0], loc[1]
