"""The RayGen paper's published numbers, printed beside ours (docs/paper.md, "The paper's reference
numbers": MIMIC-CXR p10, 605 test images, 10 classes).
"""

from __future__ import annotations

PAPER_ARM_SIZES = {
    "real": "4,684 real",
    "real+100": "4,684 real + 4,673 synthetic",
    "real+50": "4,684 real + 2,337 synthetic",
}
PAPER_TABLE1 = {"real": 0.71, "real+100": 0.68, "real+50": 0.705}  # arm -> average AUROC
PAPER_TABLE2 = {  # model -> (FID, MS-SSIM, average AUROC); None = not reported
    "RoentGen": (3.6, 0.32, 0.77),
    "UniXGen": (18.9, None, 0.73),
    "RayGen (paper)": (7.9, 0.79, 0.71),
}
PAPER_TABLE3 = {  # class -> (real, real+100, real+50)
    "Atelectasis": (0.7149, 0.7062, 0.7151),
    "Cardiomegaly": (0.7605, 0.7080, 0.7371),
    "Consolidation": (0.6761, 0.5933, 0.6362),
    "Edema": (0.8943, 0.8547, 0.8704),
    "Fracture": (0.6871, 0.6138, 0.6510),
    "Lung Lesion": (0.5857, 0.5380, 0.6015),
    "Lung Opacity": (0.5981, 0.6147, 0.6200),
    "Pleural Effusion": (0.8530, 0.8723, 0.8592),
    "Pneumonia": (0.7139, 0.6849, 0.7103),
    "Pneumothorax": (0.6574, 0.6264, 0.6496),
}
PAPER_CONTEXT = "Paper: MIMIC-CXR p10, 512 px, 605 test images, FID on 2,568 held-out images."
