"""The model gate's verdict on one model's figures: worse by more than ``--max-regression`` and
beyond chance is refused; anything less passes."""
from __future__ import annotations

import pytest

from export.gate import _verdict


def figures(rmse_worse: float = 0.0, ndcg_lower: float = 0.0, beyond_noise: bool = True) -> dict:
    return {"rmse": 0.9 * (1 + rmse_worse), "previous_rmse": 0.9, "rmse_worse_beyond_noise": beyond_noise,
            "ndcg_at_10": 0.2 * (1 - ndcg_lower), "previous_ndcg_at_10": 0.2, "ndcg_lower_beyond_noise": beyond_noise}


@pytest.mark.parametrize("metric", ["rmse_worse", "ndcg_lower"])
def test_a_model_half_a_percent_worse_passes_two_percent_worse_is_refused_at_a_one_percent_limit(metric):
    assert _verdict("mf", figures(**{metric: 0.005}), 0.01) is None
    reason = _verdict("mf", figures(**{metric: 0.02}), 0.01)
    assert reason is not None and "model 'mf'" in reason and "2.0%" in reason and "(allowed 1.0%)" in reason
    assert _verdict("mf", figures(**{metric: 0.02}), 0.03) is None


def test_a_difference_chance_could_explain_passes():
    assert _verdict("mf", figures(rmse_worse=0.2, ndcg_lower=0.2, beyond_noise=False), 0.01) is None
