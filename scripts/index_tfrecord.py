"""Rule tfrecord_index (logic: slidetiles.pipeline.steps.index_tfrecord)."""

from slidetiles.pipeline.steps import index_tfrecord, run_rule

sm = snakemake  # noqa: F821 (injected by Snakemake's script: directive)
run_rule(sm, index_tfrecord, tfrecord=sm.input.tfrecord, index=sm.output.index)
