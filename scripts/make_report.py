"""Rule report (logic: slidetiles.pipeline.steps.make_report)."""

from slidetiles.pipeline.steps import make_report, run_rule

sm = snakemake  # noqa: F821 (injected by Snakemake's script: directive)
run_rule(sm, make_report, manifests=list(sm.input.manifests), summaries=list(sm.input.summaries),
         splits=list(sm.input.splits), plots=list(sm.input.plots), html=sm.output.html,
         extractions=list(sm.input.extractions), tiles_tsv=sm.output.tiles_tsv)
