"""Metrics grouped by what they compute: FID/KID, image similarity, classification with
intervals, memorisation, resampling."""
