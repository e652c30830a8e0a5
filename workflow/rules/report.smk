def report_extractions(wildcards):
    """Every slide's extraction report (JSON), which the page's table of tiles per slide reads."""
    return [job.report for job in EXTRACT_JOBS]


def report_thumbnails(wildcards):
    """Every slide's thumbnail (written by the same job as its report): the page links them, never embeds them."""
    return [os.path.splitext(job.report)[0] + ".png" for job in EXTRACT_JOBS]


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
        extractions=report_extractions,
        thumbnails=report_thumbnails,
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
