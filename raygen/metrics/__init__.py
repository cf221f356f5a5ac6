"""Metrics grouped by what they compute.

- :mod:`~raygen.metrics.features`, :mod:`~raygen.metrics.xrv`: named feature extractors;
- :mod:`~raygen.metrics.fid`: Frechet distance, FID and KID;
- :mod:`~raygen.metrics.image_similarity`: SSIM and MS-SSIM; :mod:`~raygen.metrics.reconstruction`: PSNR
  and codebook usage of a VQ-GAN;
- :mod:`~raygen.metrics.classification`: AUROC, F1, bootstrap intervals, paired deltas, ROC curves;
  :mod:`~raygen.metrics.resampling`: the (patient-clustered) resamples and disjoint halves;
- :mod:`~raygen.metrics.memorisation`: nearest training image of each synthetic image.

The evaluate stage's sections are built from them: :mod:`~raygen.metrics.arms` (classifier arms),
:mod:`~raygen.metrics.image_sets` (the images measured), :mod:`~raygen.metrics.fidelity`,
:mod:`~raygen.metrics.conditional` (the real-only classifier as judge), :mod:`~raygen.metrics.summary`
(headline numbers) and :mod:`~raygen.metrics.plots`.
"""
