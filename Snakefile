# slidetiles: tiles -> TFRecords -> indexes -> manifests -> splits -> report.
# Thin on purpose: configuration and validation live in workflow/rules/common.smk, one stage per rules file,
# the logic in the slidetiles library (lib/slidetiles/pipeline).


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/tfrecords.smk"
include: "workflow/rules/manifests.smk"
include: "workflow/rules/splits.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),
