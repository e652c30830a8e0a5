"""Rule demo_slide (logic: slidetiles.pipeline.steps.make_demo_slide)."""

from slidetiles.pipeline.steps import make_demo_slide, run_rule

sm = snakemake  # noqa: F821 (injected by Snakemake's script: directive)
run_rule(sm, make_demo_slide, path=sm.output[0], seed=sm.params.seed)
