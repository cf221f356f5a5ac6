# Decoder phase: the masked-token transformer, trained on the cached tokens and text states only (from
# random weights, or with init: demo from the pinned pre-trained decoder in params inputs.demo).
# The resumable last.ckpt is not a declared output, so a failed or killed run keeps it and the next
# run resumes from it.


rule train_decoder:
    input:
        tokens=rules.tokenize.output.tokens,
        token_index=rules.tokenize.output.index,
        token_meta=rules.tokenize.output.meta,
        text=rules.embed_text.output.meta,
        text_states=rules.embed_text.output.states,
        generator=rules.cohort.output.generator,
        vqgan=rules.vqgan.output.model,
        vqgan_config=rules.vqgan.output.config,
        weights=weights("demo"),
        demo_sums=f"{INPUTS['demo']}/SHA256SUMS",
        code=code("train_decoder"),
    output:
        model="results/train_decoder/model.ckpt",
        metrics="results/train_decoder/metrics.json",
        samples=report("results/train_decoder/samples.png", caption="../report/decoder_samples.rst", category="Images"),
    params:
        section=section("train_decoder"),
        tokens=lambda wildcards, input: os.path.dirname(input.token_meta),
        text=lambda wildcards, input: os.path.dirname(input.text),
        vqgan=lambda wildcards, input: os.path.dirname(input.vqgan),
        demo=lambda wildcards, input: os.path.dirname(input.demo_sums),
        out=lambda wildcards, output: os.path.dirname(output.model),
    log:
        "logs/train_decoder.log",
    benchmark:
        "benchmarks/train_decoder.tsv"
    resources:
        mem_mb=mem_mb("train_decoder"),
        runtime=runtime_min("train_decoder"),
        gpu=gpus("train_decoder"),
    threads: threads_for("train_decoder")
    conda:
        CONDA_ENV
    shell:
        stage_cmd(
            "train_decoder",
            "--tokens {params.tokens} --text {params.text} --manifest {input.generator}"
            " --vqgan {params.vqgan} --demo-weights {params.demo} --out {params.out}",
        )
