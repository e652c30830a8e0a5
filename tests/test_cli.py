"""The slidetiles command line, run as a real console script."""

import shutil
import subprocess
import sys

import pytest

from slidetiles.io import tfrecord2idx

from helpers import write_tiles


def run(*args):
    exe = shutil.which("slidetiles") or sys.executable
    cmd = [exe, *args] if exe != sys.executable else [exe, "-m", "slidetiles.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def folder(tmp_path, jpeg_tiles):
    (tmp_path / "tfr").mkdir()
    for k in range(3):
        write_tiles(tmp_path / "tfr" / f"s{k}.tfrecords", jpeg_tiles[: 3 + k], slide=f"s{k}")
    return tmp_path / "tfr"


def test_index_then_inspect(folder):
    result = run("index", str(folder), "-j", "2")
    assert result.returncode == 0, result.stderr
    assert "3 of 3 TFRecord(s) indexed" in result.stdout
    assert all(tfrecord2idx.find_index(folder / f"s{k}.tfrecords") for k in range(3))
    result = run("inspect", str(folder / "s1.tfrecords"))
    assert result.returncode == 0, result.stderr
    assert "records:      4" in result.stdout
    assert "fields:       image_raw, slide, loc_x, loc_y" in result.stdout
    assert "image format: jpeg" in result.stdout
    assert "(50, 1000), (150, 993)" in result.stdout


def test_verify_reports_bad_files_and_offsets(folder):
    assert run("verify", str(folder)).returncode == 0
    bad = folder / "s2.tfrecords"
    data = bytearray(bad.read_bytes())
    data[200] ^= 0x04
    bad.write_bytes(bytes(data))
    result = run("verify", str(folder), "-j", "1")
    assert result.returncode == 1
    assert f"BAD {bad}" in result.stdout
    assert "record 0 at byte 0: CorruptRecordError" in result.stdout
    assert "2 of 3 TFRecord(s) OK" in result.stdout


def test_missing_path_is_a_clear_error(tmp_path):
    result = run("verify", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert "no such file or folder" in result.stderr


def test_write_command(tmp_path, jpeg_tiles):
    slide = tmp_path / "tiles" / "slideA"
    slide.mkdir(parents=True)
    for i, tile in enumerate(jpeg_tiles[:3]):
        (slide / f"slideA-{i * 10}-5.jpg").write_bytes(tile)
    result = run("write", str(tmp_path / "tiles"), str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "slideA.tfrecords").exists()


@pytest.mark.parametrize("pattern, message", [
    ("(", "is not a regular expression"),
    (r"-(\d+)-(\d+)", "needs named groups (?P<x>...) and (?P<y>...)"),
])
def test_bad_input_is_one_line_without_a_traceback(tmp_path, jpeg_tiles, pattern, message):
    slide = tmp_path / "tiles" / "slideA"
    slide.mkdir(parents=True)
    (slide / "slideA-0-5.jpg").write_bytes(jpeg_tiles[0])
    result = run("write", str(tmp_path / "tiles"), str(tmp_path / "out"), f"--coord-pattern={pattern}")
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "slideA.tfrecords").exists()


# Run in a child process: the tfrecord package and Slideflow both register a generated "example.proto" in
# protobuf's default pool, so they cannot be imported into one process (the Slideflow tests load Slideflow).
_TFRECORD_PACKAGE_READ = """
import json, sys
from tfrecord.reader import tfrecord_loader
from tfrecord.tools.tfrecord2idx import create_index
path, index, theirs_index = sys.argv[1:4]
create_index(path, theirs_index)
shards = [[bytes(r["image_raw"]).hex() for r in tfrecord_loader(path, index, None, shard=(i, n))]
          for i, n in [(0, 2), (1, 2), (2, 3)]]
print(json.dumps(shards))
"""


def test_index_format_text_is_read_by_the_tfrecord_package(folder, tmp_path):
    import importlib.util
    import json

    from slidetiles.tfrecord import tfrecord_loader

    if importlib.util.find_spec("tfrecord") is None:
        pytest.skip("the tfrecord package is not installed")
    result = run("index", str(folder), "--format", "text", "-j", "1")
    assert result.returncode == 0, result.stderr
    assert "3 of 3 TFRecord(s) indexed (text .tfindex)" in result.stdout
    # Only the text index: no .index.npz appears, and nothing Slideflow's find_index would pick up instead of it.
    assert sorted(p.name for p in folder.iterdir() if "index" in p.name) == [f"s{k}.tfindex" for k in range(3)]
    for k in range(3):
        path = folder / f"s{k}.tfrecords"
        text_index = folder / f"s{k}.tfindex"
        theirs_index = tmp_path / f"theirs{k}.tfindex"
        child = subprocess.run(
            [sys.executable, "-c", _TFRECORD_PACKAGE_READ, str(path), str(text_index), str(theirs_index)],
            capture_output=True, text=True, timeout=120,
        )
        assert child.returncode == 0, child.stderr
        # Byte for byte what the tfrecord package's own indexer writes.
        assert text_index.read_text() == theirs_index.read_text()
        # The package's reader, sharded through our index, gives the records ours gives for the same shards.
        theirs = json.loads(child.stdout)
        ours = [[bytes(r["image_raw"]).hex() for r in tfrecord_loader(path, shard=shard)]
                for shard in [(0, 2), (1, 2), (2, 3)]]
        assert theirs == ours and sum(map(len, ours[:2])) == 3 + k


def test_index_format_text_reports_a_damaged_file(folder):
    bad = folder / "s1.tfrecords"
    data = bytearray(bad.read_bytes())
    data[200] ^= 0x04
    bad.write_bytes(bytes(data))
    result = run("index", str(bad), "--format", "text")
    assert result.returncode == 1
    assert f"{bad}, record 0 at byte offset 0" in result.stderr and "CRC" in result.stderr
    assert not (folder / "s1.tfindex").exists()
