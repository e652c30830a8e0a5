"""Rule extract (logic: slidetiles.pipeline.steps.extract_slide)."""

from slidetiles.pipeline.steps import extract_slide, run_rule

sm = snakemake  # noqa: F821 (injected by Snakemake's script: directive)
run_rule(
    sm,
    extract_slide,
    slide_path=sm.input.slide,
    report=sm.output.report,
    job=sm.params.job,
    tile_px=sm.params.tile_px,
    tile_um=sm.params.tile_um,
    extraction=sm.params.extraction,
    on_bad_input=sm.params.on_bad_input,
    threads=sm.threads,
    thumbnail=sm.output.thumbnail,
)
