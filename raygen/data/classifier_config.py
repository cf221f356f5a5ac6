"""The classifier's arms and its augmentation settings, without torch: the ``train_classifier`` params, the
stage's ``--help`` and ``raygen check-params`` read them; :mod:`raygen.data.classifier_data` applies them."""

from __future__ import annotations

from dataclasses import dataclass

# Arm -> share of each class's synthetic images that joins the training set.
ARMS: dict[str, float] = {"real": 0.0, "real+50": 0.5, "real+100": 1.0}


@dataclass(frozen=True)
class AugmentConfig:
    """Train-time augmentation; the ``augment`` block of the train_classifier params."""

    enabled: bool = True  # off = the images exactly as preprocessed
    rotate_deg: float = 5.0  # max |rotation| in degrees: patient tilt in the cassette
    translate: float = 0.05  # max shift as a fraction of the side: positioning differences
    scale: float = 0.05  # max relative zoom change: distance / habitus differences
    brightness: float = 0.1  # max shift of [0, 1] intensities: exposure
    contrast: float = 0.1  # max relative contrast change around each image's mean
