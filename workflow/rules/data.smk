# Data phase: download -> sections -> cohort.


rule download:
    input:
        code=code("download"),
    output:
        # The marker is written last; the stage never leaves it beside a half-built tree. Declaring
        # the marker (not the folder) keeps Snakemake from deleting a finished download on a rerun.
        complete=DOWNLOADED,
    params:
        section=section("download"),
    log:
        "logs/download.log",
    benchmark:
        "benchmarks/download.tsv"
    resources:
        mem_mb=mem_mb("download"),
        runtime=runtime_min("download"),
    threads: threads_for("download")
    conda:
        CONDA_ENV
    shell:
        stage_cmd("download", f"--out {DATA}")


rule sections:
    input:
        data=rules.download.output.complete,
        code=code("sections"),
    output:
        sectioned="results/sections/mimic_cxr_sectioned.csv",
        prompts="results/sections/prompts.csv",
    params:
        section=section("sections"),
        reports=REPORTS_ROOT,
    log:
        "logs/sections.log",
    benchmark:
        "benchmarks/sections.tsv"
    resources:
        mem_mb=mem_mb("sections"),
        runtime=runtime_min("sections"),
    threads: threads_for("sections")
    conda:
        CONDA_ENV
    shell:
        stage_cmd("sections", "--reports-root {params.reports} --out {output.sectioned} --prompts {output.prompts}")


rule cohort:
    input:
        data=rules.download.output.complete,
        prompts=rules.sections.output.prompts,
        code=code("cohort"),
    output:
        generator="results/cohort/generator.csv",
        fid="results/cohort/fid.csv",
        classifier="results/cohort/classifier.csv",
        counts="results/cohort/counts.json",
    params:
        section=section("cohort"),
        jpg=JPG_ROOT,
        truth=f"{DATA}/demo-ground-truth.csv",
        out=lambda wildcards, output: os.path.dirname(output.generator),
    log:
        "logs/cohort.log",
    benchmark:
        "benchmarks/cohort.tsv"
    resources:
        mem_mb=mem_mb("cohort"),
        runtime=runtime_min("cohort"),
    threads: threads_for("cohort", cpu=1)
    conda:
        CONDA_ENV
    shell:
        stage_cmd(
            "cohort",
            "--jpg-root {params.jpg} --sections {input.prompts} --ground-truth {params.truth} --out {params.out}",
        )
