"""RayGen: text-to-chest-X-ray synthesis as a reproducible pipeline."""

__version__ = "0.1.0"
