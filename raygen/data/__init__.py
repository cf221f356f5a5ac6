"""Data: the MIMIC-CXR layout and schemas, reports and sections, cohorts, datasets, the demo
renderer."""
