rule extract:
    """One slide file of a `slides` source -> <tfrecords>/<label>/<slide>.tfrecords + .index.npz (written
    atomically by the library), then results/extraction/<source>/<slide>.json (tiles kept and removed, or why
    the slide was skipped) and <slide>.png (the slide's thumbnail with its kept and removed tiles drawn, or why
    it has none: the report links it)."""
    input:
        unpack(extract_input),
    output:
        report="results/extraction/{source}/{slide}.json",
        thumbnail="results/extraction/{source}/{slide}.png",
    log:
        "logs/extract/{source}/{slide}.log",
    benchmark:
        "results/benchmarks/extract/{source}/{slide}.tsv"
    wildcard_constraints:
        source=SLIDE_SOURCE_PATTERN,
    # Its own group: a slide's extraction is minutes of multi-threaded work, the tfrecord rules' seconds of one
    # thread, so the SLURM profile packs fewer of them into one submission (group-components).
    group:
        "extract_slides"
    conda:
        "../../environment.yml"
    threads: 4
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        job=extract_params,
        tile_px=config["tile_px"],
        tile_um=config["tile_um"],
        extraction=EXTRACTION,
        on_bad_input=config["on_bad_input"],
    script:
        "../../scripts/extract.py"
