# Image-token phase: the VQ-GAN (trained here, or the paper's pretrained one), then token ids of every
# cohort image. UniXGen's files are looked for in weights/unixgen-vqgan/ (used only with
# vqgan.source: pretrained; see README "The paper profile").

UNIXGEN_DIR = "weights/unixgen-vqgan"


rule vqgan:
    input:
        generator=rules.cohort.output.generator,
    output:
        model="results/vqgan/model.ckpt",
        config="results/vqgan/config.yaml",
        grid="results/vqgan/reconstructions.png",
        metrics="results/vqgan/metrics.json",
    params:
        section=section("vqgan"),
        jpg=JPG_ROOT,
        pretrained_config=f"{UNIXGEN_DIR}/2021-12-17T08-58-54-project.yaml",
        pretrained_ckpt=f"{UNIXGEN_DIR}/last.ckpt",
        out=lambda wildcards, output: os.path.dirname(output.model),
    log:
        "logs/vqgan.log",
    benchmark:
        "benchmarks/vqgan.tsv"
    resources:
        mem_mb=6000,
        gpu=1 if PROFILE == "paper" else 0,
    threads: 2
    conda:
        CONDA_ENV
    shell:
        stage_cmd(
            "vqgan",
            "--manifest {input.generator} --jpg-root {params.jpg} --pretrained-config {params.pretrained_config}"
            " --pretrained-ckpt {params.pretrained_ckpt} --out {params.out}",
        )


rule tokenize:
    input:
        model=rules.vqgan.output.model,
        config=rules.vqgan.output.config,
        generator=rules.cohort.output.generator,
        fid=rules.cohort.output.fid,
        classifier=rules.cohort.output.classifier,
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
        mem_mb=4000,
        gpu=1 if PROFILE == "paper" else 0,
    threads: 2
    conda:
        CONDA_ENV
    shell:
        stage_cmd(
            "tokenize",
            "--vqgan {params.vqgan} --manifests {input.generator} {input.fid} {input.classifier}"
            " --jpg-root {params.jpg} --out {params.out}",
        )
