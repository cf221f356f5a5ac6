"""The demo's pinned parts in ``weights/demo/`` (params ``inputs.demo``), checked by hash whenever they load.

The paper profile loads a pretrained tokenizer (UniXGen's VQ-GAN) and a pretrained FID network
(torchxrayvision's DenseNet-121); the demo does the same with parts RayGen trained once with its own
stages (``raygen demo-weights``, profiles ``demo_weights`` and ``demo_weights_decoder``) on demo datasets
rendered with other seeds:

    vqgan/project.yaml, vqgan/last.ckpt   the demo VQ-GAN, in UniXGen's layout (taming yaml + Lightning-style
                                          ``{"state_dict": ...}``), installed by ``vqgan.source: demo``
    fid-densenet121.ckpt                  a grey DenseNet-121 trained on the 10 findings: its penultimate
                                          features are the demo's FID/KID space (``evaluate.extractor: demo``)
                                          and it judges conditional fidelity
    decoder.ckpt                          the masked-token decoder pre-trained on a larger dataset's tokens of the
                                          VQ-GAN above; ``train_decoder.init: demo`` fine-tunes it
    SHA256SUMS                            the files' hashes (``sha256sum -c`` format), checked at every load
    provenance.json                       how they were made: commit, params, metrics, dataset ids

Without torch: ``--help`` texts and params checks name these files cheaply.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raygen.errors import MissingFileError, UserError
from raygen.io import sha256_file

VQGAN_CONFIG = "vqgan/project.yaml"
VQGAN_CHECKPOINT = "vqgan/last.ckpt"
FID_NETWORK = "fid-densenet121.ckpt"
DECODER = "decoder.ckpt"
SUMS = "SHA256SUMS"
PROVENANCE = "provenance.json"
FILES = (VQGAN_CONFIG, VQGAN_CHECKPOINT, FID_NETWORK, DECODER)
RECREATE = "raygen demo-weights --out weights/demo"  # the one command that re-creates every file above


class PinnedHashError(UserError):
    """A pinned file whose content is not the one its SHA256SUMS line names."""


def read_sums(folder: Path) -> dict[str, str]:
    """``{relative name: sha256}`` from ``folder/SHA256SUMS``."""
    path = folder / SUMS
    if not path.is_file():
        raise MissingFileError(
            f"{path} not found: the demo's pinned weights are incomplete; `{RECREATE}` re-creates them"
        )
    sums = {}
    for line in path.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.lstrip("*")] = digest
    return sums


def write_sums(folder: Path) -> str:
    """The SHA256SUMS text of the :data:`FILES` in ``folder`` (a part never packed has no line, so loading
    it is refused)."""
    return "".join(f"{sha256_file(folder / name)}  {name}\n" for name in FILES if (folder / name).is_file())


def half_floats(state: dict[str, Any]) -> dict[str, Any]:
    """Floating tensors to fp16 (halves a pinned file; the loaders cast back to fp32), others unchanged."""
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def verified(folder: str | Path, name: str) -> Path:
    """``folder/name`` after checking its SHA-256 against ``folder/SHA256SUMS``: a missing or changed file
    is an error naming the file and the command that re-creates it, never a silent substitute."""
    folder = Path(folder)
    path = folder / name
    if not path.is_file():
        raise MissingFileError(
            f"pinned demo weight not found: {path} (committed with the repository; `{RECREATE}` re-creates it)"
        )
    pinned = read_sums(folder).get(name)
    actual = sha256_file(path)
    if pinned != actual:
        raise PinnedHashError(
            f"{path}: sha256 {actual[:12]} is not the pinned {str(pinned)[:12]} in {folder / SUMS}; restore it "
            f"(`git checkout -- {folder}`) or re-create every pinned file with `{RECREATE}`"
        )
    return path


def pinned_vqgan(folder: str | Path | None) -> tuple[Path, Path]:
    """The demo VQ-GAN's (taming yaml, checkpoint), both checked against SHA256SUMS."""
    if folder is None:
        raise MissingFileError("vqgan.source is 'demo' but --demo-weights was not given (params inputs.demo)")
    return verified(folder, VQGAN_CONFIG), verified(folder, VQGAN_CHECKPOINT)
