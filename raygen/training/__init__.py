"""Training loops of the pipeline's networks (decoder, classifier, VQ-GAN) and the scaffolding they share:
resumable checkpoints, RNG capture, the warm-up + cosine learning-rate schedule, AdamW's weight-decay split."""
