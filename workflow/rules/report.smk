rule report:
    """One HTML page: each dataset's summary and distribution of tiles per slide, for slide sources the tiles
    kept and removed per slide (the slides that most need a look inline, linked to their thumbnails; every slide
    in results/extraction/tiles_per_slide.tsv), each split's composition."""
    input:
        manifests=expand(
            "results/manifests/{dataset}.json", dataset=sorted(config["datasets"])
        ),
        summaries=expand(
            "results/manifests/{dataset}.summary.txt",
            dataset=sorted(config["datasets"]),
        ),
        splits=expand("results/splits/{plan}.json", plan=sorted(config["splits"])),
        plots=expand("results/splits/{plan}.png", plan=sorted(config["splits"])),
        # Every slide's extraction report and thumbnail: the page's table reads the reports and links the
        # thumbnails (never embeds them).
        extractions=[job.report for job in EXTRACT_JOBS],
        thumbnails=[job.thumbnail for job in EXTRACT_JOBS],
    output:
        html=report(
            "results/report.html", category="Report", caption="../report/report.rst"
        ),
        tiles_tsv="results/extraction/tiles_per_slide.tsv",
    log:
        "logs/report.log",
    benchmark:
        "results/benchmarks/report.tsv"
    localrule: True
    conda:
        "../../environment.yml"
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../../scripts/make_report.py"
