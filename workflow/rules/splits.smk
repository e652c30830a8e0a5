from slidetiles.splits.spec import config_params


rule split:
    """A split plan -> results/splits/<plan>.json (Slideflow's splits.json format) and its composition plots.

    The plan (strategy, labels, k_fold, fraction, seed...) goes through params, so changing it re-runs exactly this
    split, and a forced re-run on unchanged inputs rewrites byte-identical JSON.
    """
    input:
        manifest=split_manifest,
    output:
        splits="results/splits/{plan}.json",
        png=report(
            "results/splits/{plan}.png",
            category="Splits",
            caption="../report/split.rst",
        ),
        svg="results/splits/{plan}.svg",
    log:
        "logs/split/{plan}.log",
    benchmark:
        "results/benchmarks/split/{plan}.tsv"
    localrule: True
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        # The plan as the split spec reads it (new key names, defaults filled), so renaming an old key re-runs nothing.
        plan=lambda wildcards: config_params(config["splits"][wildcards.plan]),
    script:
        "../../scripts/make_split.py"
