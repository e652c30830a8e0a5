if DEMO["enabled"]:

    rule demo_tiles:
        """A small deterministic cohort: tile folders named <slide>-<x>-<y>.jpg and an annotations CSV."""
        output:
            tiles=directory(DEMO_TILES),
            annotations=os.path.join(DEMO["out_dir"], "annotations.csv"),
        log:
            "logs/demo_tiles.log",
        benchmark:
            "results/benchmarks/demo_tiles.tsv"
        conda:
            "../../environment.yml"
        resources:
            mem_mb=1000,
            runtime=20,
        params:
            demo=DEMO,
            tile_px=config["tile_px"],
        script:
            "../../scripts/make_demo.py"
