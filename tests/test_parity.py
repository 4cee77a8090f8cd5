"""The parity rule: ratings to an absolute tolerance, ranking logits to one that grows with their size."""
from __future__ import annotations

import numpy as np
import pytest

from contract.bundle_format import PARITY_TOLERANCE
from contract.errors import ParityError
from contract.parity import check_parity

USERS, ITEMS = np.array([11, 12, 13]), np.array([21, 22, 23])


def test_ratings_must_agree_to_the_absolute_tolerance():
    expected = np.array([0.2, 0.5, 0.9], np.float32)
    assert check_parity("mf", expected, expected + np.float32(2e-6), USERS, ITEMS, "ctx") < PARITY_TOLERANCE
    off = expected.copy()
    off[1] += 3e-5
    with pytest.raises(ParityError, match=r"ctx: model 'mf' differs .* at \(user_id, item_id\) = \(12, 22\)"):
        check_parity("mf", expected, off, USERS, ITEMS, "ctx")


def test_large_logits_may_differ_in_proportion_small_ones_may_not():
    expected = np.array([0.5, -40.0, 3000.0], np.float64)
    rounded = expected + np.array([0.0, 2e-4, 2e-2])     # under 1e-5 x |logit|, far over 1e-5
    assert check_parity("dense", expected, rounded, USERS, ITEMS, "ctx", logits=True) == pytest.approx(2e-2)
    with pytest.raises(ParityError, match=r"\(13, 23\)"):
        check_parity("dense", expected, rounded, USERS, ITEMS, "ctx")          # as ratings: refused
    small = expected + np.array([3e-5, 0.0, 0.0])                               # |logit| < 1: absolute rule
    with pytest.raises(ParityError, match=r"\(11, 21\)"):
        check_parity("dense", expected, small, USERS, ITEMS, "ctx", logits=True)


def test_nan_and_shape_mismatch_fail():
    expected = np.zeros(3, np.float32)
    with pytest.raises(ParityError):
        check_parity("lstm", expected, np.array([0, np.nan, 0], np.float32), USERS, ITEMS, "ctx", logits=True)
    with pytest.raises(ParityError, match="shape"):
        check_parity("lstm", expected, np.zeros(2, np.float32), USERS, ITEMS, "ctx")


@pytest.mark.slow
def test_export_refuses_graphs_off_by_1e4_and_publishes_nothing(synthetic_dir, tmp_path, monkeypatch):
    # Torch's reference moved by 1e-4 on [0, 1]: ten times the tolerance, so every graph differs.
    import dataclasses

    from export import bundle as bundle_module
    from export.config import RunConfig
    from export.data.loading import DataSource
    from export.pipeline import train_and_export

    real = bundle_module.torch_reference

    def moved(*args, **kwargs):
        reference = real(*args, **kwargs)
        return dataclasses.replace(reference, unit_ratings=reference.unit_ratings + np.float32(1e-4))

    monkeypatch.setattr(bundle_module, "torch_reference", moved)
    config = RunConfig(models=("mf",), seed=3).replace_training(max_epochs=2, batch_size=128)
    artifacts = tmp_path / "artifacts"
    with pytest.raises(ParityError, match=r"export parity, pairwise graph: model 'mf' differs from the torch "
                                          r"reference by 0\.0001"):
        train_and_export(config, DataSource(data_dir=synthetic_dir), artifacts, jobs=1)
    assert not (artifacts / "latest").exists() and not any(p.name != ".lock" for p in artifacts.iterdir())
