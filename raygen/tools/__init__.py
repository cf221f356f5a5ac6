"""User commands that are not pipeline stages: ``raygen generate`` and ``raygen demo-data``."""
