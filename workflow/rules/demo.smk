if DEMO["enabled"]:

    rule demo_tiles:
        """A small deterministic cohort: tile folders named <slide>-<x>-<y>.jpg and an annotations CSV."""
        output:
            tiles=directory(DEMO_TILES),
            annotations=os.path.join(DEMO["out_dir"], "annotations.csv"),
        params:
            demo=DEMO,
            tile_px=config["tile_px"],
        log:
            "logs/demo_tiles.log",
        benchmark:
            "results/benchmarks/demo_tiles.tsv"
        resources:
            mem_mb=1000,
            runtime=20,
        script:
            "../../scripts/make_demo.py"
