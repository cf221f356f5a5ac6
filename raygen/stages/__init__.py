"""The pipeline's stages, in execution order: the one list the CLI, the params checker, the code-deps
generator and the tests derive from. One name per stage everywhere: module ``raygen.stages.<name>``, CLI
command ``raygen <name>``, Snakemake rule, DVC stage, params section, ``results/<name>/`` and
``logs/<name>.log``.

Standard library only: the Snakefile imports it before any environment is activated. The stage modules
themselves need only the standard library and PyYAML at import time, and import the library (torch,
pandas, ...) inside ``main``, after parsing the arguments: ``raygen check-params``, which Snakemake runs in
its own process, reads every stage's params class, and ``raygen <stage> --help`` answers at once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str
    params_class: str  # the stage module's frozen dataclass for its params section
    summary: str  # one line for `raygen --help`
    # The CLI flag whose value is the DVC foreach key / Snakemake wildcard (one stage per value) ...
    foreach_arg: str | None = None
    # ... and those values, in order.
    instances: tuple[str, ...] = ()


STAGES: tuple[Stage, ...] = (
    Stage("download", "DownloadParams", "build the demo dataset, or download / link MIMIC-CXR-JPG and its reports"),
    Stage("sections", "SectionsParams", "split radiology reports into sections (official MIMIC-CXR rules)"),
    Stage("cohort", "CohortParams", "build generator pairs and classifier train/val/test manifests"),
    Stage(
        "vqgan",
        "VqganParams",
        "train the VQ-GAN tokenizer, or install the paper's pretrained one; report reconstruction quality",
    ),
    Stage("tokenize", "TokenizeParams", "encode every cohort image into VQ-GAN token ids (int16 memmap)"),
    Stage("embed_text", "EmbedTextParams", "cache token-level text-encoder states of every prompt (fp16 memmap)"),
    Stage(
        "train_decoder",
        "TrainDecoderParams",
        "train the text-conditioned masked-token transformer on the cached tokens and text",
    ),
    Stage("synthesize", "SynthesizeParams", "generate the per-report (FID) and class-balanced augmentation image sets"),
    Stage(
        "train_classifier",
        "TrainClassifierParams",
        "train the DenseNet-121 of one arm (real, real+50, real+100)",
        foreach_arg="--arm",
        instances=("real", "real+50", "real+100"),
    ),
    Stage(
        "evaluate",
        "EvaluateParams",
        "FID/KID, SSIM/MS-SSIM, AUROC/F1 with CIs, conditional fidelity, memorisation, ROC plots",
    ),
    Stage("tables", "TablesParams", "the paper's Tables 1-3 (markdown + CSV), our numbers beside the paper's"),
)

STAGE_NAMES: tuple[str, ...] = tuple(stage.name for stage in STAGES)
BY_NAME: dict[str, Stage] = {stage.name: stage for stage in STAGES}
