"""Rule manifest (logic: slidetiles.pipeline.steps.build_manifest)."""

from slidetiles.pipeline.steps import build_manifest, run_rule

sm = snakemake  # noqa: F821 (injected by Snakemake's script: directive)
run_rule(
    sm,
    build_manifest,
    manifest=sm.output.manifest,
    summary=sm.output.summary,
    tiles_per_slide=sm.output.tiles_per_slide,
    dataset=sm.params.dataset,
    sources=sm.params.sources,
    tile_px=sm.params.tile_px,
    tile_um=sm.params.tile_um,
    annotations=sm.input.annotations,
    on_bad_input=sm.params.on_bad_input,
    extraction_reports=list(sm.input.extraction),
)
