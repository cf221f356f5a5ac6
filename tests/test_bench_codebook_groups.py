"""bench/codebook_groups.py: merged codes map onto one member of their own cluster, so the VQ-GAN still decodes them."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from codebook_groups import code_groups  # noqa: E402


def test_each_code_becomes_the_member_of_its_cluster_nearest_the_centre():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    codebook = np.concatenate([c + rng.normal(scale=0.5, size=(5, 2)) for c in centres])  # codes 0-4, 5-9, 10-14
    mapping = code_groups(codebook, groups=3, seed=0)
    for members in (range(0, 5), range(5, 10), range(10, 15)):
        chosen = set(mapping[list(members)])
        assert len(chosen) == 1 and chosen <= set(members)  # one id per cluster, one of its own codes
        (rep,) = chosen
        mean = codebook[list(members)].mean(axis=0)
        nearest = min(members, key=lambda i: np.linalg.norm(codebook[i] - mean))
        assert rep == nearest
    assert (mapping[mapping] == mapping).all()  # a representative maps to itself


def test_a_representative_is_chosen_among_its_clusters_members(monkeypatch):
    # A clustering in which the code nearest each centre belongs to the other cluster (code 2 is 0.05
    # from centre 1.0, code 1 is 0.2 from centre 2.0): picking the nearest of all codes would swap the
    # clusters' ids and map a representative onto another code.
    codebook = np.array([[0.0], [2.2], [1.05], [3.0]])
    labels, centres = np.array([0, 0, 1, 1]), np.array([[1.0], [2.0]])

    class FixedKMeans:
        def __init__(self, *args, **kwargs):
            pass

        def fit(self, data):
            self.labels_, self.cluster_centers_ = labels, centres
            return self

    import sklearn.cluster

    monkeypatch.setattr(sklearn.cluster, "KMeans", FixedKMeans)
    mapping = code_groups(codebook, groups=2, seed=0)
    assert list(mapping) == [0, 0, 2, 2]  # cluster 0's members: code 0 is nearer 1.0; cluster 1's: code 2 nearer 2.0
