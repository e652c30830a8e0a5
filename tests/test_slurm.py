"""Snakemake through workflow/profiles/slurm on a real SLURM cluster.

Needs a reachable cluster with an idle node; on this kind of machine `tests/slurm/cluster.sh install && start`
gives one. Without a cluster the tests are skipped ("no SLURM cluster reachable"), unless
SLIDETILES_REQUIRE_SLURM=1 (set by .ci/run), which turns the skip into a failure.

`run_snakemake_on_slurm` and `run_snakemake_locally` are the reusable pieces: same workflow, same config, one
through SLURM and one on this machine; `file_tree` reads a result folder for comparing the two.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
SLURM_PROFILE = REPO / "workflow" / "profiles" / "slurm"
LOCAL_PROFILE = REPO / "workflow" / "profiles" / "default"
REQUIRE_ENV = "SLIDETILES_REQUIRE_SLURM"
# Node states in which a node takes jobs (sinfo %T; a trailing "*" means the node is not responding).
UP_STATES = {"idle", "mixed", "allocated", "completing"}
# The whole run: sbatch, the plugin's status polling (2 s, then +10 s per quiet round) and Snakemake itself.
SLURM_RUN_TIMEOUT = 900


def slurm_cluster() -> dict:
    """The reachable cluster's node CPUs, or skip ("no SLURM cluster reachable"); fail if REQUIRE_ENV is set.

    `sinfo` finds the configuration the way the Snakemake plugin's own sinfo/sbatch/squeue calls will:
    $SLURM_CONF if set, else /etc/slurm/slurm.conf, else /run/slurm/conf (tests/slurm/cluster.sh).
    """
    sinfo = shutil.which("sinfo")
    problem = None
    if sinfo is None:
        problem = "sinfo not found"
    else:
        try:
            out = subprocess.run(
                [sinfo, "-h", "-o", "%T %c"], capture_output=True, text=True, timeout=20
            )
        except subprocess.TimeoutExpired:
            problem = "sinfo timed out after 20 s"
        else:
            if out.returncode != 0:
                last = (out.stderr.strip().splitlines() or ["no message"])[-1]
                problem = f"sinfo exited {out.returncode}: {last}"
            else:
                nodes = [line.split() for line in out.stdout.splitlines() if line.strip()]
                cpus = [int(c) for state, c in nodes if state in UP_STATES and c.isdigit()]
                if cpus:
                    return {"cpus": min(cpus)}
                problem = f"no node up (sinfo: {out.stdout.strip() or 'no nodes'})"
    reason = f"no SLURM cluster reachable ({problem}); start one with tests/slurm/cluster.sh start"
    if os.environ.get(REQUIRE_ENV, "") not in ("", "0"):
        pytest.fail(f"{REQUIRE_ENV} is set but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cluster():
    return slurm_cluster()


def local_cluster_args(cpus: int) -> list[str]:
    """What a cluster without accounting (tests/slurm/cluster.sh) needs on top of the SLURM profile."""
    return [
        # No slurmdbd: sacct knows no jobs, squeue does (while MinJobAge keeps finished ones).
        "--slurm-status-command", "squeue",
        # Do not guess an account from sacct. (A no-op in plugin 2.8.0, which then guesses, warns, goes on.)
        "--slurm-no-account",
        # The first status query after 2 s, not the profile's 10 s.
        "--slurm-init-seconds-before-status-checks", "2",
        # The largest job the node can run: caps threads and the width of group jobs.
        "--cores", str(cpus),
        # A failure is a failure here, not a retry.
        "--retries", "0",
    ]  # fmt: skip


def _run(cmd: list[str], workdir: Path, log: Path, timeout: float) -> subprocess.CompletedProcess:
    """Run Snakemake in its own process group, output to `log`. On timeout it gets SIGINT first, so that it
    cancels its SLURM jobs, then SIGKILL."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            raise AssertionError(
                f"snakemake did not finish in {timeout:.0f} s:\n{_tail(log)}"
            ) from None
    return subprocess.CompletedProcess(cmd, rc, log.read_text(), "")


def _tail(path: Path, n: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


def _slurm_logs(workdir: Path, n: int = 30) -> str:
    logs = sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
    return "".join(f"\n----- {p.relative_to(workdir)} -----\n{_tail(p, n)}" for p in logs)


def _snakemake(workdir, snakefile, configfile, extra_args) -> list[str]:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory", str(workdir)]
    if configfile is not None:
        cmd += ["--configfile", str(configfile)]
    return cmd + [str(a) for a in extra_args]


def run_snakemake_on_slurm(
    workdir, snakefile, configfile=None, extra_args=(), *, timeout=SLURM_RUN_TIMEOUT
) -> subprocess.CompletedProcess:
    """Run a workflow through SLURM with workflow/profiles/slurm plus what the local test cluster needs.

    `extra_args` come last and so win over the profile and the cluster arguments. The output goes to
    `workdir/snakemake-slurm.log`; a failure raises AssertionError with its tail and the SLURM job logs.
    Returns the CompletedProcess (stdout: the whole log) with `.seconds` added.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    cpus = slurm_cluster()["cpus"]
    cmd = _snakemake(workdir, snakefile, configfile, [
        "--profile", SLURM_PROFILE,
        # Only this profile: not also the workflow profile (workflow/profiles/default) found beside the Snakefile.
        "--workflow-profile", "none",
        *local_cluster_args(cpus),
        *extra_args,
    ])  # fmt: skip
    log = workdir / "snakemake-slurm.log"
    start = time.monotonic()
    result = _run(cmd, workdir, log, timeout)
    result.seconds = time.monotonic() - start
    if result.returncode != 0:
        raise AssertionError(
            f"snakemake on SLURM exited {result.returncode}:\n{_tail(log)}{_slurm_logs(workdir)}"
        )
    return result


def run_snakemake_locally(
    workdir, snakefile, configfile=None, extra_args=(), *, timeout=SLURM_RUN_TIMEOUT
) -> subprocess.CompletedProcess:
    """The same workflow on this machine with workflow/profiles/default (output: workdir/snakemake-local.log)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = _snakemake(workdir, snakefile, configfile, [
        "--profile", "none", "--workflow-profile", LOCAL_PROFILE, *extra_args,
    ])  # fmt: skip
    log = workdir / "snakemake-local.log"
    start = time.monotonic()
    result = _run(cmd, workdir, log, timeout)
    result.seconds = time.monotonic() - start
    if result.returncode != 0:
        raise AssertionError(f"local snakemake exited {result.returncode}:\n{_tail(log)}")
    return result


def file_tree(root) -> dict[str, bytes]:
    """{relative path: bytes} of every file under root, for comparing two runs' results."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# A tiny workflow: per slide, `tile` then `count` (one `per_slide` group: the profile's group-components puts
# both slides' four jobs into one SLURM job), then `merge` with threads and resources (a second SLURM job).
SNAKEFILE = textwrap.dedent(
    """
    SLIDES = config["slides"]
    # Where a job ran: its SLURM job id ("local" outside SLURM), its CPUs, and what SLURM allocated to it.
    WHERE = (
        "echo job=${{SLURM_JOB_ID:-local}} cpus=${{SLURM_CPUS_PER_TASK:-0}} "
        "$(scontrol show job ${{SLURM_JOB_ID:-none}} 2>/dev/null | grep -oE '(NumCPUs|MinMemoryNode)=[^ ]+')"
    )

    rule all:
        input: "results/summary.tsv"
        localrule: True

    rule tile:
        output: "results/tiles/{slide}.txt"
        log: "logs/tile/{slide}.log"
        group: "per_slide"
        shell:
            "for i in $(seq 1 {config[tiles]}); do echo {wildcards.slide}-$i; done > {output}; "
            + WHERE + " > {log}"

    rule count:
        input: rules.tile.output
        output: "results/counts/{slide}.txt"
        log: "logs/count/{slide}.log"
        group: "per_slide"
        shell: "wc -l < {input} > {output}; " + WHERE + " > {log}"

    rule merge:
        input: expand("results/counts/{slide}.txt", slide=SLIDES)
        output: "results/summary.tsv"
        log: "logs/merge.log"
        threads: 2
        resources: mem_mb=500, runtime=5
        shell:
            "for f in {input}; do printf '%s\\\\t%s\\\\n' $(basename $f .txt) $(cat $f); done > {output}; "
            + WHERE + " threads={threads} > {log}"
    """
)
CONFIG = "slides: [alpha, beta]\ntiles: 3\n"


def _log_fields(path: Path) -> dict[str, str]:
    return dict(item.split("=", 1) for item in path.read_text().split())


def test_workflow_through_slurm_profile_matches_local_run(tmp_path, cluster):
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    (tmp_path / "config.yaml").write_text(CONFIG)

    slurm = run_snakemake_on_slurm(tmp_path / "slurm", tmp_path / "Snakefile", tmp_path / "config.yaml")
    print(f"4 jobs + merge through SLURM: {slurm.seconds:.1f} s")

    results = tmp_path / "slurm" / "results"
    assert file_tree(results) == {
        "tiles/alpha.txt": b"alpha-1\nalpha-2\nalpha-3\n",
        "tiles/beta.txt": b"beta-1\nbeta-2\nbeta-3\n",
        "counts/alpha.txt": b"3\n",
        "counts/beta.txt": b"3\n",
        "summary.tsv": b"alpha\t3\nbeta\t3\n",
    }

    # Really SLURM, and grouped as the profile says: one SLURM job for all per_slide jobs, another for merge.
    logs = tmp_path / "slurm" / "logs"
    tiles = [_log_fields(logs / f"tile/{slide}.log") for slide in ("alpha", "beta")]
    group_jobs = {f["job"] for f in tiles} | {
        _log_fields(logs / f"count/{slide}.log")["job"] for slide in ("alpha", "beta")
    }
    merge = _log_fields(logs / "merge.log")
    assert len(group_jobs) == 1 and group_jobs != {""}, group_jobs
    assert merge["job"] and merge["job"] not in group_jobs, (merge, group_jobs)
    # Two slides side by side in the group job, each 1 CPU, capped by --cores (the node's CPUs).
    assert tiles[0]["NumCPUs"] == str(min(2, cluster["cpus"])), tiles
    # merge: threads -> --cpus-per-task, resources: mem_mb=500 -> --mem 500.
    threads = min(2, cluster["cpus"])
    assert merge["threads"] == merge["cpus"] == str(threads), merge
    assert merge["MinMemoryNode"] == "500M", merge

    # The same workflow on this machine (workflow/profiles/default) writes the same results.
    run_snakemake_locally(tmp_path / "local", tmp_path / "Snakefile", tmp_path / "config.yaml", ["--cores", "2"])
    assert file_tree(tmp_path / "local" / "results") == file_tree(results)


def _comparable(results: Path) -> dict:
    """What must be equal between two runs of the real pipeline: everything but file modification times.

    TFRecords and splits byte for byte; indexes by their arrays (the npz also records the TFRecord's mtime);
    manifests with each TFRecord's recorded mtime left out. Report and timings differ by nature.
    """
    import json

    import numpy as np

    out = {}
    for path in sorted(results.rglob("*")):
        name = path.relative_to(results).as_posix()
        if path.suffix == ".tfrecords" or (name.startswith("splits/") and path.suffix == ".json"):
            out[name] = path.read_bytes()
        elif name.endswith(".index.npz"):
            with np.load(path, allow_pickle=False) as npz:
                out[name] = (npz["arr_0"].tolist(), npz["locations"].tolist())
        elif name.startswith("manifests/") and path.suffix == ".json":
            doc = json.loads(path.read_text())
            for entry in doc["tfrecords"].values():
                entry.pop("mtime_ns")
            out[name] = doc
    return out


def test_demo_pipeline_on_slurm_equals_local_run(tmp_path, cluster):
    config = REPO / ".test" / "config" / "config.yaml"
    slurm = run_snakemake_on_slurm(tmp_path / "slurm", REPO / "Snakefile", config)
    print(f"demo pipeline through SLURM: {slurm.seconds:.1f} s")
    run_snakemake_locally(tmp_path / "local", REPO / "Snakefile", config, ["--cores", "2"])
    on_slurm = _comparable(tmp_path / "slurm" / "results")
    local = _comparable(tmp_path / "local" / "results")
    assert sum(name.endswith(".tfrecords") for name in on_slurm) == 10
    assert set(on_slurm) == set(local)
    for name in sorted(local):
        assert on_slurm[name] == local[name], f"{name} differs between the SLURM and the local run"
    # The per-slide jobs really went through sbatch, grouped: far fewer SLURM jobs than the 20 per-slide jobs.
    submitted = slurm.stdout.count("has been submitted with SLURM jobid")
    assert 1 <= submitted < 20, slurm.stdout[-3000:]
