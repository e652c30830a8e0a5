"""Rule split (logic: slidetiles.pipeline.steps.make_split)."""

from slidetiles.pipeline.steps import make_split, run_rule

sm = snakemake  # noqa: F821 (injected by Snakemake's script: directive)
run_rule(sm, make_split, manifest=sm.input.manifest, plan=sm.params.plan, splits=sm.output.splits,
         png=sm.output.png, svg=sm.output.svg)
