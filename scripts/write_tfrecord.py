"""Rule tfrecord (logic: slidetiles.pipeline.steps.write_slide_tfrecord)."""

from slidetiles.pipeline.steps import run_rule, write_slide_tfrecord

sm = snakemake  # noqa: F821 (injected by Snakemake's script: directive)
run_rule(
    sm,
    write_slide_tfrecord,
    tiles_dir=sm.params.tiles_dir,
    tfrecord=sm.output.tfrecord,
    coord_pattern=sm.params.coord_pattern,
    on_bad_input=sm.params.on_bad_input,
)
