"""Label vocabulary shared by the cohort, the demo renderer, synthesis and evaluation.

CheXpert / NegBio label values in MIMIC-CXR: 1.0 positive, 0.0 negative, -1.0 uncertain, blank = not
mentioned. The paper's recipe (docs/mimic-cxr.md section 5) drops studies with any -1, reads blank as 0,
drops studies positive for one of :data:`DROPPED` and keeps the 10 :data:`CLASSES`.
"""

from __future__ import annotations

# The 14 CheXpert labels in the column order of mimic-cxr-2.0.0-chexpert.csv.gz (alphabetical).
CHEXPERT_LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)

# Studies positive for any of these are dropped and the columns removed (paper's classifier recipe).
DROPPED: tuple[str, ...] = ("Enlarged Cardiomediastinum", "No Finding", "Pleural Other", "Support Devices")

# The paper's 10 classes, alphabetical: the classifier's output order everywhere.
CLASSES: tuple[str, ...] = tuple(c for c in CHEXPERT_LABELS if c not in DROPPED)

assert len(CLASSES) == 10
