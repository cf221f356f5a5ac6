# Text phase: cache the text encoder's token-level states of every prompt once.


rule embed_text:
    input:
        generator=rules.cohort.output.generator,
        fid=rules.cohort.output.fid,
        weights=weights("cxr_bert"),
        code=code("embed_text"),
    output:
        states="results/embed_text/states.npy",
        lengths="results/embed_text/lengths.npy",
        index="results/embed_text/index.csv",
        null="results/embed_text/null.npy",
        meta="results/embed_text/meta.json",
    params:
        section=section("embed_text"),
        cxr_bert=INPUTS["cxr_bert"],
        out=lambda wildcards, output: os.path.dirname(output.meta),
    log:
        "logs/embed_text.log",
    benchmark:
        "benchmarks/embed_text.tsv"
    resources:
        mem_mb=mem_mb("embed_text"),
        runtime=runtime_min("embed_text"),
        gpu=gpus("embed_text"),
    threads: threads_for("embed_text")
    conda:
        CONDA_ENV
    shell:
        stage_cmd("embed_text", "--prompts {input.generator} {input.fid} --cxr-bert-dir {params.cxr_bert} --out {params.out}")
