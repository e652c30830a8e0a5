rule report:
    """One HTML page: each dataset's summary and tiles per slide, each split's composition."""
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
    output:
        html=report(
            "results/report.html", category="Report", caption="../report/report.rst"
        ),
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
