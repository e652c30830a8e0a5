"""The record stream under every reader (slidetiles.tfrecord.stream) and the options every training loader checks once
(slidetiles.loaders.options)."""

import dataclasses

import numpy as np
import pytest

from slidetiles.errors import CorruptRecordError
from slidetiles.io import tfrecord2idx
from slidetiles.loaders import LoaderError, LoaderOptions, TileSource, iter_shard, start_pass
from slidetiles.tfrecord import multi_tfrecord_loader
from slidetiles.tfrecord.stream import ReadPlan, file_records, interleave

from helpers import write_named_records


@pytest.fixture
def files(tmp_path):
    return [write_named_records(tmp_path / f"s{k}.tfrecords", f"s{k}", n) for k, n in enumerate([7, 13, 1, 30, 4])]


def name(i, record, offset, payload):
    return (i, record)


def plan_for(files, **fields):
    arrays = [tfrecord2idx.load_index(p) for p in files]
    fields = {"weights": np.ones(len(files)), **fields}
    return ReadPlan(paths=files, index_of=arrays.__getitem__, ranges=[(0, len(a)) for a in arrays], **fields)


def slideflow_reference(sizes, weights, rng, infinite, limit):
    """multi_tfrecord_loader's draws as they were first written: one scalar searchsorted per record."""
    active = [i for i, (n, w) in enumerate(zip(sizes, weights)) if n and w > 0]
    position = dict.fromkeys(active, 0)
    cumulative = np.cumsum(weights[active])
    draws, used, out = rng.random(1024), 0, []
    while active and len(out) < limit:
        if used == len(draws):
            draws, used = rng.random(1024), 0
        slot = min(int(np.searchsorted(cumulative, draws[used] * cumulative[-1], side="right")), len(active) - 1)
        used += 1
        i = active[slot]
        if position[i] == sizes[i] and infinite:
            position[i] = 0
        if position[i] == sizes[i]:
            del active[slot]
            cumulative = np.cumsum(weights[active])
            continue
        out.append((i, position[i]))
        position[i] += 1
    return out


@pytest.mark.parametrize("infinite", [False, True])
def test_slideflow_draws_keep_their_sequence_when_files_run_out(files, infinite):
    # Files run out mid-block (1 and 4 records); the rest of the block must map onto the files left exactly as
    # the per-record draws did, so a seed gives multi_tfrecord_loader's users the same records as before.
    weights = np.asarray([1.0, 2.0, 0.0, 3.0, 1.0]) / 7
    plan = plan_for(files, weights=weights, draw="slideflow", infinite=infinite)
    got = [x for _, x in zip(range(3000), interleave(plan, name, np.random.default_rng(4)))]
    expected = slideflow_reference([7, 13, 1, 30, 4], weights, np.random.default_rng(4), infinite, 3000)
    assert got == expected


def test_slideflow_loader_reads_through_the_stream(files):
    loader = multi_tfrecord_loader(files, infinite=False, seed=9)
    weights = np.full(5, 0.2)
    expected = slideflow_reference([7, 13, 1, 30, 4], weights, np.random.default_rng(9), False, 10_000)
    got = [(int(bytes(r["slide"])[1:]), int(r["loc_x"][0])) for r in loader]
    assert got == expected


def test_once_reads_every_record_once_whatever_the_weights(files):
    plan = plan_for(files, draw="once", weights=np.asarray([0.0, 1, 1, 1, 1]))
    got = list(interleave(plan, name, np.random.default_rng(0)))
    assert sorted(got) == sorted((i, r) for i, n in enumerate([7, 13, 1, 30, 4]) for r in range(n))


def test_file_records_start_wraps_and_shuffles_within_batches(files):
    plan = plan_for(files[:1], starts=[5], memory_budget=1 << 20)
    assert [r for _, r in file_records(plan, 0, name)] == [5, 6, 0, 1, 2, 3, 4]
    shuffled = dataclasses.replace(plan, shuffle_batches=True)
    got = [r for _, r in file_records(shuffled, 0, name, np.random.default_rng(1))]
    assert sorted(got) == list(range(7)) and got != [5, 6, 0, 1, 2, 3, 4]


def test_damaged_records_follow_the_plans_policy(files):
    plan = plan_for(files[1:2])  # the index as it was: the file is damaged after indexing
    arr_0 = tfrecord2idx.load_index(files[1])
    with open(files[1], "r+b") as f:  # flip a payload byte of record 2
        f.seek(int(arr_0[2, 0]) + 14)
        byte = f.read(1)
        f.seek(int(arr_0[2, 0]) + 14)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(CorruptRecordError):
        list(file_records(plan, 0, name))
    lost = []
    skipping = dataclasses.replace(plan, on_skip=lambda error, n: lost.append((error.record, n)))
    assert [r for _, r in file_records(skipping, 0, name)] == [0, 1] + list(range(3, 13))
    assert lost == [(2, 1)]


def test_a_plan_names_its_draw():
    with pytest.raises(ValueError, match="draw must be one of"):
        ReadPlan(paths=[], index_of=list.__getitem__, ranges=[], weights=np.ones(0), draw="shuffle")


def test_options_are_normalised_once():
    options = LoaderOptions(batch_size=8, augment="jyx", standardize=True, seed=None, num_workers=2)
    assert options.augment == "xyj" and options.augmenter.letters == "xyj"
    assert options.standardize == "image" and isinstance(options.seed, int)
    again = dataclasses.replace(options, batch_size=4)
    assert again.seed == options.seed and again.batch_size == 4  # a drawn seed stays drawn
    assert options.shard_plan().n_shards == 2 and options.shard_plan(0).n_shards == 1


@pytest.mark.parametrize(
    "fields, error, message",
    [
        ({"batch_size": 0}, LoaderError, "batch_size must be None or >= 1, got 0"),
        ({"num_workers": True}, LoaderError, "num_workers must be >= 0, got True"),
        ({"rank": 2, "world_size": 2}, LoaderError, "need world_size >= 1 and 0 <= rank < world_size"),
        ({"on_error": "ignore"}, LoaderError, "on_error must be one of ('raise', 'skip'), got 'ignore'"),
        ({"shuffle_buffer": -1}, LoaderError, "shuffle_buffer must be >= 0, got -1"),
        ({"augment": "n"}, ValueError, "stain augmentation"),
        ({"color_jitter": 1.5}, ValueError, "color_jitter must be in [0, 1)"),
        ({"standardize": "x"}, ValueError, "standardize must be a bool or one of"),
    ],
)
def test_options_refuse_what_every_loader_refused(fields, error, message):
    with pytest.raises(error) as info:
        LoaderOptions(**fields)
    assert message in str(info.value)


def test_every_loader_starts_a_pass_the_same_way(files):
    sources = TileSource.from_paths(files, weights=[1, 2, 1, 3, 1])
    options = LoaderOptions(infinite=False, seed=3, augment="xy", num_workers=2)
    first = start_pass(sources, options, epoch=1, worker=1, num_workers=2)
    tiles = [(t.source, t.record) for t in first.tiles]
    # Worker 1 of 2 reads shard 1 of 2, in the order iter_shard gives that shard for the same seed and epoch.
    assert tiles == [(t.source, t.record) for t in iter_shard(sources, 1, 2, seed=3, epoch=1)]
    assert first.augments is not None and first.augments.augmenter.letters == "xy"
