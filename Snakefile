# RayGen pipeline (Snakemake). Run: snakemake --cores all   (add --use-conda to use workflow/envs/)
# Profile switch: the `profile:` key of params.yaml, or `snakemake --config profile=smoke`.
# Every rule runs `python -m raygen.<stage> ...`, the same command as the DVC stage of that name.

configfile: "params.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/tokens.smk"
include: "workflow/rules/text.smk"
include: "workflow/rules/decoder.smk"
include: "workflow/rules/evaluation.smk"


onsuccess:
    # Hand the finished outputs to DVC, so that `dvc repro` afterwards finds nothing to recompute.
    dvc_handover()


rule all:
    input:
        rules.tables.output,
    default_target: True
