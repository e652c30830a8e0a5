if DEMO["enabled"]:

    rule demo_slide:
        """One synthetic whole-slide image of the demo cohort (tissue islands, pen mark, blurred patch), written
        atomically; its size and scene follow from demo.seed and the slide's number, so slides are independent jobs.
        """
        output:
            os.path.join(DEMO_SLIDES, "{demo_file}"),
        log:
            "logs/demo_slide/{demo_file}.log",
        benchmark:
            "results/benchmarks/demo_slide/{demo_file}.tsv"
        wildcard_constraints:
            demo_file=r"slide_\d+\.(svs|ome\.tiff|tiff)",
        conda:
            "../../environment.yml"
        resources:
            mem_mb=1000,
            runtime=10,
        params:
            seed=DEMO["seed"],
        script:
            "../../scripts/make_demo_slide.py"

    rule demo_annotations:
        """The demo cohort's annotations CSV: patient, slide, site, label."""
        output:
            os.path.join(DEMO["out_dir"], "annotations.csv"),
        log:
            "logs/demo_annotations.log",
        localrule: True
        conda:
            "../../environment.yml"
        resources:
            mem_mb=500,
            runtime=5,
        params:
            demo=DEMO,
        script:
            "../../scripts/make_demo_annotations.py"
