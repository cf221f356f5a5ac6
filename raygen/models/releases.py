"""Names of the published pretrained files and snapshots RayGen loads: hub ids, pinned revisions and release
file names, exactly as their authors publish them.

Without torch, so that params defaults, ``--help`` texts and ``raygen check-params`` can name them cheaply.
"""

from __future__ import annotations

CXR_BERT_HUB_ID = "microsoft/BiomedVLP-CXR-BERT-specialized"
# Commit f1cc2c6 of the hub repo: the first revision that works with return_dict=True on current
# transformers (docs/mimic-cxr.md section 7); the full hash is the snapshot folder name in HF caches.
CXR_BERT_REVISION = "f1cc2c6b7fac60f3724037746a129a5baf194dbc"

# torchvision's ImageNet DenseNet-121 weights, looked for in the torch hub cache when no file is given.
TORCHVISION_DENSENET121 = "densenet121-a639ec97.pth"

# Files a perceptual loss needs, looked up in one folder (--lpips-dir):
LPIPS_FILES = {
    "vgg.pth": "taming-transformers' LPIPS linear layers (taming.util URL_MAP['vgg_lpips'])",
    "vgg16-397923af.pth": "torchvision's ImageNet VGG-16 (VGG16_Weights.IMAGENET1K_V1)",
}
