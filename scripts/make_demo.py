"""Rule demo_tiles (logic: slidetiles.pipeline.steps.make_demo)."""

from slidetiles.pipeline.steps import make_demo, run_rule

sm = snakemake  # noqa: F821 (injected by Snakemake's script: directive)
run_rule(sm, make_demo, out_dir=sm.params.demo["out_dir"], demo=sm.params.demo, tile_px=sm.params.tile_px)
