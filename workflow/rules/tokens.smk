# Image-token phase: the VQ-GAN (the demo's pinned one, the paper's pretrained one, or trained here), then
# token ids of every cohort image. UniXGen's files live in params inputs.unixgen_vqgan (used only with
# vqgan.source: pretrained; see README "The paper profile"), the demo's in inputs.demo (vqgan.source: demo).


rule vqgan:
    input:
        generator=rules.cohort.output.generator,
        data=rules.download.output.complete,
        weights=weights("unixgen_vqgan", "lpips", "demo"),
        demo_sums=f"{INPUTS['demo']}/SHA256SUMS",
        code=code("vqgan"),
    output:
        model="results/vqgan/model.ckpt",
        config="results/vqgan/config.yaml",
        grid=report("results/vqgan/reconstructions.png", caption="../report/reconstructions.rst", category="Images"),
        metrics="results/vqgan/metrics.json",
    params:
        section=section("vqgan"),
        jpg=JPG_ROOT,
        pretrained=INPUTS["unixgen_vqgan"],
        lpips=INPUTS["lpips"],
        demo=lambda wildcards, input: os.path.dirname(input.demo_sums),
        out=lambda wildcards, output: os.path.dirname(output.model),
    log:
        "logs/vqgan.log",
    benchmark:
        "benchmarks/vqgan.tsv"
    resources:
        mem_mb=mem_mb("vqgan"),
        runtime=runtime_min("vqgan"),
        gpu=gpus("vqgan"),
    threads: threads_for("vqgan")
    conda:
        CONDA_ENV
    shell:
        stage_cmd(
            "vqgan",
            "--manifest {input.generator} --jpg-root {params.jpg} --pretrained-config {params.pretrained}/project.yaml"
            " --pretrained-ckpt {params.pretrained}/last.ckpt --lpips-dir {params.lpips} --demo-weights {params.demo}"
            " --out {params.out}",
        )


rule tokenize:
    input:
        model=rules.vqgan.output.model,
        config=rules.vqgan.output.config,
        generator=rules.cohort.output.generator,
        fid=rules.cohort.output.fid,
        classifier=rules.cohort.output.classifier,
        data=rules.download.output.complete,
        code=code("tokenize"),
    output:
        tokens="results/tokenize/tokens.npy",
        index="results/tokenize/index.csv",
        meta="results/tokenize/meta.json",
    params:
        section=section("tokenize"),
        jpg=JPG_ROOT,
        vqgan=lambda wildcards, input: os.path.dirname(input.model),
        out=lambda wildcards, output: os.path.dirname(output.meta),
    log:
        "logs/tokenize.log",
    benchmark:
        "benchmarks/tokenize.tsv"
    resources:
        mem_mb=mem_mb("tokenize"),
        runtime=runtime_min("tokenize"),
        gpu=gpus("tokenize"),
    threads: threads_for("tokenize")
    conda:
        CONDA_ENV
    shell:
        stage_cmd(
            "tokenize",
            "--vqgan {params.vqgan} --manifests {input.generator} {input.fid} {input.classifier}"
            " --jpg-root {params.jpg} --out {params.out}",
        )
