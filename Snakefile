# slidetiles: tiles -> TFRecords -> indexes -> manifests -> splits -> report.
# Thin on purpose: configuration and validation live in workflow/rules/common.smk, one stage per rules file,
# the logic in the slidetiles library (lib/slidetiles/pipeline). The workflow profile lives in
# workflow/profiles/default; the root's `profiles` link points there, so Snakemake finds it by itself.


# The embedded demo is the run only when no config file is given: `--configfile my_config.yaml` must describe
# the whole run, so nothing of the demo (its source, datasets, splits) is merged into it. `--config key=value`
# alone still edits the demo.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/tfrecords.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/manifests.smk"
include: "workflow/rules/splits.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),
