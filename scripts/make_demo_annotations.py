"""Rule demo_annotations (logic: slidetiles.pipeline.steps.make_demo_annotations)."""

from slidetiles.pipeline.steps import make_demo_annotations, run_rule

sm = snakemake  # noqa: F821 (injected by Snakemake's script: directive)
run_rule(sm, make_demo_annotations, path=sm.output[0], demo=sm.params.demo)
