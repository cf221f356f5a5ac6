# Evaluation phase: synthetic sets -> one classifier per arm -> metrics -> the paper's tables.



rule synthesize:
    input:
        decoder=rules.train_decoder.output.model,
        vqgan=rules.vqgan.output.model,
        vqgan_config=rules.vqgan.output.config,
        tokens=rules.tokenize.output.tokens,
        token_index=rules.tokenize.output.index,
        text=rules.embed_text.output.meta,
        text_states=rules.embed_text.output.states,
        fid=rules.cohort.output.fid,
        generator=rules.cohort.output.generator,
        classifier=rules.cohort.output.classifier,
        weights=weights("cxr_bert"),
        code=code("synthesize"),
    output:
        images=directory("results/synthesize/images"),
        per_report="results/synthesize/per_report.csv",
        aug="results/synthesize/aug_100.csv",
        samples=report("results/synthesize/samples_per_class.png", caption="../report/samples.rst", category="Images"),
        progressive=report("results/synthesize/progressive.png", caption="../report/progressive.rst", category="Images"),
        meta="results/synthesize/meta.json",
    params:
        section=section("synthesize"),
        vqgan=lambda wildcards, input: os.path.dirname(input.vqgan),
        tokens=lambda wildcards, input: os.path.dirname(input.tokens),
        text=lambda wildcards, input: os.path.dirname(input.text),
        cxr_bert=INPUTS["cxr_bert"],
        out=lambda wildcards, output: os.path.dirname(output.meta),
    log:
        "logs/synthesize.log",
    benchmark:
        "benchmarks/synthesize.tsv"
    resources:
        mem_mb=mem_mb("synthesize"),
        runtime=runtime_min("synthesize"),
        gpu=gpus("synthesize"),
    threads: threads_for("synthesize")
    conda:
        CONDA_ENV
    shell:
        stage_cmd(
            "synthesize",
            "--checkpoint {input.decoder} --vqgan {params.vqgan} --tokens {params.tokens} --text {params.text}"
            " --fid {input.fid}"
            " --generator {input.generator} --classifier {input.classifier} --cxr-bert-dir {params.cxr_bert}"
            " --out {params.out}",
        )


rule train_classifier:
    input:
        unpack(classifier_synthetic),
        data=rules.download.output.complete,
        manifest=rules.cohort.output.classifier,
        weights=weights("chexnet", "torchxrayvision"),
        code=code("train_classifier"),
    output:
        model="results/train_classifier/{arm}/model.ckpt",
        history="results/train_classifier/{arm}/history.csv",
        val="results/train_classifier/{arm}/val_predictions.csv",
        test="results/train_classifier/{arm}/test_predictions.csv",
        metrics="results/train_classifier/{arm}/metrics.json",
    wildcard_constraints:
        arm="|".join(re.escape(a) for a in ARMS),
    params:
        section=section("train_classifier"),
        jpg=JPG_ROOT,
        chexnet=CHEXNET_FILE,
        xrv=XRV_FILE,
        synthetic=lambda wildcards, input: f" --synthetic {input.synthetic}" if "synthetic" in input.keys() else "",
        out=lambda wildcards, output: os.path.dirname(output.model),
    log:
        "logs/train_classifier/{arm}.log",
    benchmark:
        "benchmarks/train_classifier/{arm}.tsv"
    resources:
        mem_mb=mem_mb("train_classifier"),
        runtime=runtime_min("train_classifier"),
        gpu=gpus("train_classifier"),
    # On the CPU every arm takes one thread (runtime cpu_threads): one-thread jobs side by side get more
    # images/s than 2-thread jobs one after the other (docs/benchmarks.md). The augmented arms train beside
    # each other; the real arm, ready as soon as the cohort is, beside the one-thread stages of the
    # decoder's chain (embed_text, vqgan, tokenize). Its priority starts it first, so it is done about
    # when train_decoder needs both cores. All arms then also sum floats in the same order.
    threads: threads_for("train_classifier")
    priority: 1
    conda:
        CONDA_ENV
    shell:
        stage_cmd(
            "train_classifier",
            "--manifest {input.manifest} --jpg-root {params.jpg} --arm {wildcards.arm}"
            " --init-chexnet {params.chexnet} --init-xrv {params.xrv} --out {params.out}{params.synthetic}",
            log="logs/train_classifier/{wildcards.arm}.log",
        )


rule evaluate:
    input:
        per_report=rules.synthesize.output.per_report,
        aug=rules.synthesize.output.aug,
        images=rules.synthesize.output.images,
        generator=rules.cohort.output.generator,
        data=rules.download.output.complete,
        classifiers=expand("results/train_classifier/{arm}/{name}", arm=ARMS,
                           name=("model.ckpt", "val_predictions.csv", "test_predictions.csv", "metrics.json")),
        weights=weights("torchxrayvision", "demo"),
        demo_sums=f"{INPUTS['demo']}/SHA256SUMS",
        code=code("evaluate"),
    output:
        metrics="results/evaluate/metrics.json",
        summary="results/evaluate/summary.json",
        roc=expand("results/evaluate/roc/{arm}.csv", arm=ARMS),
        roc_png=report("results/evaluate/plots/roc.png", caption="../report/roc.rst", category="Evaluation"),
        pairs=report("results/evaluate/plots/memorisation_pairs.png", caption="../report/memorisation.rst",
                     category="Evaluation"),
        real_vs_generated=report("results/evaluate/plots/real_vs_generated.png",
                                 caption="../report/real_vs_generated.rst", category="Images"),
    params:
        section=section("evaluate"),
        synthetic=lambda wildcards, input: os.path.dirname(input.per_report),
        jpg=JPG_ROOT,
        xrv=XRV_FILE,
        demo=lambda wildcards, input: os.path.dirname(input.demo_sums),
        out=lambda wildcards, output: os.path.dirname(output.metrics),
    log:
        "logs/evaluate.log",
    benchmark:
        "benchmarks/evaluate.tsv"
    resources:
        mem_mb=mem_mb("evaluate"),
        runtime=runtime_min("evaluate"),
        gpu=gpus("evaluate"),
    threads: threads_for("evaluate")
    conda:
        CONDA_ENV
    shell:
        stage_cmd(
            "evaluate",
            "--synthetic {params.synthetic} --classifiers results/train_classifier --generator {input.generator}"
            " --jpg-root {params.jpg} --xrv-weights {params.xrv} --demo-weights {params.demo} --out {params.out}",
        )


rule tables:
    input:
        metrics=rules.evaluate.output.metrics,
        code=code("tables"),
    output:
        tables=report("results/tables/tables.md", caption="../report/tables.rst", category="Tables"),
        md=expand("results/tables/table{i}.md", i=(1, 2, 3)),
        csv=expand("results/tables/table{i}.csv", i=(1, 2, 3)),
    params:
        section=section("tables"),
        out=lambda wildcards, output: os.path.dirname(output.tables),
    log:
        "logs/tables.log",
    benchmark:
        "benchmarks/tables.tsv"
    resources:
        mem_mb=mem_mb("tables"),
        runtime=runtime_min("tables"),
    threads: threads_for("tables", cpu=1)
    conda:
        CONDA_ENV
    shell:
        stage_cmd("tables", "--metrics {input.metrics} --out {params.out}")
