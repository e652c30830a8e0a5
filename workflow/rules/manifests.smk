rule manifest:
    """A filtered, clipped, balanced dataset -> results/manifests/<dataset>.json (+ its summary tables)."""
    input:
        tfrecords=dataset_tfrecords,
        indexes=dataset_indexes,
        extraction=dataset_extraction_reports,
        annotations=config["annotations"],
    output:
        manifest="results/manifests/{dataset}.json",
        summary="results/manifests/{dataset}.summary.txt",
        tiles_per_slide="results/manifests/{dataset}.tiles_per_slide.tsv",
    log:
        "logs/manifest/{dataset}.log",
    benchmark:
        "results/benchmarks/manifest/{dataset}.tsv"
    localrule: True
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        dataset=dataset_params,
        sources=SOURCES,
        tile_px=config["tile_px"],
        tile_um=config["tile_um"],
        on_bad_input=config["on_bad_input"],
    script:
        "../../scripts/build_manifest.py"
