"""The logistic-fitted PLCC keeps the sign of the correlation it reports."""

import numpy as np
import pytest
from scipy.stats import pearsonr

from iqa_lightning.metrics import plcc_logistic


def _anti_correlated(n=80, seed=0):
    rng = np.random.default_rng(seed)
    mos = np.linspace(1.0, 5.0, n)
    # Predictions fall, non-linearly, as the MOS rises: a model that ranks images backwards.
    pred = 1.0 / (1.0 + np.exp(2.0 * (mos - 3.0))) + rng.normal(0, 0.05, n)
    return pred, mos


@pytest.mark.parametrize("params", [4, 5])
def test_anti_correlation_stays_negative(params):
    pred, mos = _anti_correlated()
    assert pearsonr(pred, mos)[0] < -0.8
    fitted = plcc_logistic(pred, mos, params=params)
    assert fitted < -0.8
    # The same figure as for the mirrored predictions, with the sign carried over.
    assert fitted == pytest.approx(-plcc_logistic(-pred, mos, params=params), abs=1e-6)


@pytest.mark.parametrize("params", [4, 5])
def test_positive_correlation_is_unchanged_by_the_sign_rule(params):
    pred, mos = _anti_correlated()
    pred = -pred
    fitted = plcc_logistic(pred, mos, params=params)
    assert fitted >= pearsonr(pred, mos)[0] - 1e-6  # the fit only helps a rising relation
    assert fitted > 0.9


def test_degenerate_inputs_give_nan():
    mos = np.linspace(1, 5, 10)
    assert np.isnan(plcc_logistic(np.ones(10), mos))
    assert np.isnan(plcc_logistic(mos, np.ones(10)))
    with pytest.raises(ValueError, match="4 or 5"):
        plcc_logistic(mos, mos, params=3)
