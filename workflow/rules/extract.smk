rule extract:
    """One slide file of a `slides` source -> <tfrecords>/<label>/<slide>.tfrecords + .index.npz (written
    atomically by the library), then results/extraction/<source>/<slide>.json (tiles kept and removed, or why
    the slide was skipped) and <slide>.png (the slide's thumbnail with its kept and removed tiles drawn, or why
    it has none: the report links it)."""
    input:
        extract_inputs,
    output:
        report="results/extraction/{source}/{slide}.json",
        thumbnail="results/extraction/{source}/{slide}.png",
    log:
        "logs/extract/{source}/{slide}.log",
    benchmark:
        "results/benchmarks/extract/{source}/{slide}.tsv"
    wildcard_constraints:
        source=SLIDE_SOURCE_PATTERN,
    conda:
        "../../environment.yml"
    threads: 4
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        job=extract_job_json,
        script=os.path.join(workflow.basedir, "scripts", "extract.py"),
    # A shell command rather than `script:`, and the cluster group set in the SLURM profile rather than here:
    # at 10,000 slides, Snakemake's per-job cost of a script (re-reading it for every job) and of a group job
    # made `snakemake -n` ~45 s; this way it is under 30 s (benchmarks/bench_dag.py).
    shell:
        "python {params.script:q} --job {params.job:q} --threads {threads} --log {log:q}"
