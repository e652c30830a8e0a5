"""Helpers shared by the tests (importable as `helpers`: pytest puts tests/ on sys.path)."""

from slidetiles.io.writer import TFRecordWriter


def write_tiles(path, tiles, slide="slide1", locations=True):
    """Write ``tiles`` as tile records; returns the (x, y) written (or None)."""
    locs = [(100 * i + 50, 1000 - 7 * i) for i in range(len(tiles))] if locations else None
    with TFRecordWriter(path) as writer:
        for i, tile in enumerate(tiles):
            if locs:
                writer.write_tile(tile, slide, *locs[i])
            else:
                writer.write_tile(tile, slide)
    return locs


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
