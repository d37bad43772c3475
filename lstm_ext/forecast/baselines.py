"""Baselines a user would pick instead of the LSTM, forecast for the same
origins and lead times, in the same units:

    persistence      the last observed value
    seasonal naive   the value whole seasons before the target
    ets              exponential smoothing (Holt-Winters: additive error, damped
                     additive trend, additive season where the season fits)
    arima            an auto-ARIMA: (p, d, q) and the number of Fourier terms
                     of the seasonal period (non-integer periods allowed, e.g.
                     365.25/7 weeks) chosen by AIC, a linear drift regressor
    theta            the Theta method (Assimakopoulos & Nikolopoulos; Hyndman &
                     Billah's SES-with-drift form), statsmodels' ThetaModel:
                     classical seasonal decomposition where a seasonality test
                     finds one, SES plus half the linear trend's slope

ETS, ARIMA and Theta come from statsmodels: a well-kept library of plain
numpy/scipy code (no JIT compiler, unlike statsforecast's numba, whose first
compile alone would take much of the training budget), with state-space
models whose filtered states give every origin's forecast at once.

No peeking: each model is fitted on the data before the test part only; its
parameters are then frozen and its state filtered through the data up to each
origin, from which the forecast for leads 1..horizon is made.
"""
import warnings
from typing import Dict, Optional

import numpy as np


def seasonal_naive(values: np.ndarray, origins: np.ndarray, horizon: int,
                   season: int) -> np.ndarray:
    """For each origin t and lead 1..horizon, the value whole seasons before the
    target that lies at or before t (never a value after the origin)."""
    leads = np.arange(1, horizon + 1)
    seasons_back = np.ceil(leads / season).astype(np.int64) * season
    return values[origins[:, None] + leads[None, :] - seasons_back[None, :]]


def ets(values: np.ndarray, fit_end: int, origins: np.ndarray, horizon: int,
        season: int) -> np.ndarray:
    """Holt-Winters forecasts (origins, horizon) from a model fitted on
    ``values[:fit_end]``."""
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel
    seasonal = season > 1 and fit_end >= 2 * season + 2
    spec = dict(error="add", trend="add", damped_trend=True,
                seasonal="add" if seasonal else None,
                seasonal_periods=season if seasonal else None,
                initialization_method="estimated")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = ETSModel(values[:fit_end], **spec).fit(disp=False)
        states = np.asarray(ETSModel(values, **spec).smooth(fitted.params).states)
    params = dict(zip(fitted.model.param_names, fitted.params))
    leads = np.arange(1, horizon + 1)
    damped = np.cumsum(params["damping_trend"] ** leads)
    pred = states[origins, 0][:, None] + damped[None, :] * states[origins, 1][:, None]
    if seasonal:
        back = np.ceil(leads / season).astype(np.int64) * season
        pred = pred + states[origins[:, None] + leads[None, :] - back[None, :], 2]
    return pred


def fourier(n: int, period: float, k: int) -> np.ndarray:
    """sin/cos of the first ``k`` harmonics of ``period`` at steps 0..n-1."""
    t = np.arange(n)[:, None] * np.arange(1, k + 1)[None, :] * (2 * np.pi / period)
    return np.concatenate([np.sin(t), np.cos(t)], axis=1)


def _is_stationary(train: np.ndarray) -> bool:
    from statsmodels.tsa.stattools import kpss
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return kpss(train, regression="c", nlags="auto")[1] > 0.05


def auto_arima(values: np.ndarray, fit_end: int, origins: np.ndarray, horizon: int,
               period: float, info: Optional[dict] = None) -> np.ndarray:
    """Forecasts (origins, horizon) of the ARIMA with Fourier terms chosen by
    AIC on ``values[:fit_end]``; ``info`` (if given) receives the choice."""
    from statsmodels.tsa.statespace.sarimax import SARIMAX
    n = len(values)
    train = values[:fit_end]
    d = 0 if _is_stationary(train) else 1
    drift = (np.arange(n) / max(period, 1.0))[:, None]
    # d = 0: a constant and no drift; d = 1: the drift is the trend's slope
    base = drift if d == 1 else np.ones((n, 1))
    ks = [0] if period < 2 else list(range(1, min(4, int(period // 2)) + 1))

    def exog_for(k):
        return np.concatenate([base, fourier(n, period, k)], axis=1) if k else base

    # Selection as auto.arima does it, in two cheap stages: the number of
    # Fourier pairs by AIC of the regression on the d-times differenced data,
    # then (p, q) by AIC of ARMA models of that regression's residual; then
    # one joint maximum-likelihood fit of the chosen model.
    def differenced(a):
        return np.diff(a, n=d, axis=0) if d else a

    best_aic, k = np.inf, ks[0]
    target = differenced(train)
    for cand in ks:
        design = differenced(exog_for(cand)[:fit_end])
        coef, *_ = np.linalg.lstsq(design, target, rcond=None)
        rss = float(np.sum((target - design @ coef) ** 2))
        aic = len(target) * np.log(rss / len(target)) + 2 * design.shape[1]
        if aic < best_aic:
            best_aic, k = aic, cand
    exog = exog_for(k)
    design = differenced(exog[:fit_end])
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    resid = target - design @ coef
    best_order, best_aic = (1, d, 1), np.inf
    for p, q in [(1, 1), (0, 1), (1, 0), (2, 1), (1, 2), (2, 2), (3, 0), (4, 0), (5, 0),
                 (5, 1)]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            aic = SARIMAX(resid, order=(p, 0, q), trend="n").fit(disp=False, maxiter=50).aic
        if np.isfinite(aic) and aic < best_aic:
            best_order, best_aic = (p, d, q), aic
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = SARIMAX(train, exog=exog[:fit_end], order=best_order).fit(disp=False,
                                                                             maxiter=200)
    best = (result, exog, best_order, k)
    result, exog, order, k = best
    if info is not None:
        info.update(order=list(order), fourier_terms=k, d=d, period=period, aic=float(result.aic))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = result.apply(values, exog=exog, refit=False)
    states = full.filtered_state                         # a_{t|t}, (k_states, n)
    k_states = full.model.k_states
    transition = np.asarray(full.model["transition"]).reshape(k_states, k_states)
    design = np.asarray(full.model["design"]).reshape(1, k_states)
    beta = np.asarray(result.params)[:exog.shape[1]]
    state = states[:, origins]
    pred = np.zeros((len(origins), horizon))
    for lead in range(horizon):
        state = transition @ state
        pred[:, lead] = (design @ state)[0] + exog[origins + lead + 1] @ beta
    return pred


def theta(values: np.ndarray, fit_end: int, origins: np.ndarray, horizon: int,
          season: int, info: Optional[dict] = None) -> np.ndarray:
    """Theta-method forecasts (origins, horizon): statsmodels' ThetaModel
    (theta 2) fitted on ``values[:fit_end]`` (its seasonality test, seasonal
    indices, trend slope b0 and SES weight alpha), then frozen; from each
    origin t the SES level is filtered through the deseasonalised data up to t
    and the forecast is statsmodels' own formula with T = t + 1 observations
    (at t = fit_end - 1 it is ``ThetaModelResults.forecast``)."""
    from statsmodels.tsa.forecasting.theta import ThetaModel
    seasonal = season > 1 and fit_end >= 2 * season + 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ThetaModel(values[:fit_end], period=season if seasonal else 1,
                           deseasonalize=seasonal)
        fitted = model.fit()
    alpha, b0 = float(fitted.params["alpha"]), float(fitted.params["b0"])
    indices = np.asarray(fitted._seasonal, dtype=float) if seasonal else np.zeros(0)
    multiplicative = model.method.startswith("mul")
    n = len(values)
    if len(indices):
        factor = indices[np.arange(n + horizon) % season]
    else:
        factor = np.ones(n + horizon) if multiplicative else np.zeros(n + horizon)
    plain = values / factor[:n] if multiplicative else values - factor[:n]
    # SES with the first value as its known initial level, as ThetaModel.fit
    level = np.empty(n)
    current = plain[0]
    for i in range(n):
        current = alpha * plain[i] + (1 - alpha) * current
        level[i] = current
    leads = np.arange(1, horizon + 1, dtype=float)
    nobs = origins.astype(float) + 1
    h = leads[None, :] - 1
    if alpha > 0:
        h = h + 1 / alpha - ((1 - alpha) ** nobs / alpha)[:, None]
    pred = 0.5 * b0 * h + level[origins][:, None]
    target = origins[:, None] + leads.astype(np.int64)[None, :]
    pred = pred * factor[target] if multiplicative else pred + factor[target]
    if info is not None:
        info.update(alpha=alpha, b0=b0, deseasonalised=bool(len(indices)),
                    method=("multiplicative" if multiplicative else "additive")
                    if len(indices) else None)
    return pred


def all_baselines(values: np.ndarray, fit_end: int, origins: np.ndarray, horizon: int,
                  season: int, period: float, info: Optional[dict] = None,
                  statistical: bool = True, theta_info: Optional[dict] = None
                  ) -> Dict[str, np.ndarray]:
    """Every baseline's forecasts (origins, horizon), by name (ETS, ARIMA and
    Theta only if ``statistical``)."""
    preds = {"persistence": np.repeat(values[origins][:, None], horizon, axis=1)}
    if season > 1:
        preds[f"seasonal_naive_{season}"] = seasonal_naive(values, origins, horizon, season)
    if not statistical:
        return preds
    preds["ets"] = ets(values, fit_end, origins, horizon, season)
    preds["arima"] = auto_arima(values, fit_end, origins, horizon, period, info)
    preds["theta"] = theta(values, fit_end, origins, horizon, season, theta_info)
    return preds
