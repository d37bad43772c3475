"""The forecasting application built on the library: ``python -m lstm_ext
{train,forecast,backtest,export}`` on a univariate series (by default the
embedded Mauna Loa weekly CO2 series) or several (long format).

    settings     defaults and allowed values of every setting (TrainConfig, LIMITS)
    series       reading a series from CSV (and the embedded ones, in data/)
    frequency    the frequency inferred from the times, the settings it implies,
                 future times by calendar arithmetic
    windows      the split, scaling and windows a model learns from
    forecaster   the Forecaster module that is exported and deployed, and the
                 recursive forecast past its horizon
    training     the training loop and the whole run (``train``)
    panel        several series of a long-format file (unique_id, ds, y): one
                 global model, per-series and overall evaluation, forecasts
    baselines    persistence, seasonal naive, ETS, auto-ARIMA and Theta (statsmodels)
    evaluation   test metrics beside baselines, intervals, backtest, report, plots
    artifacts    the one writer and reader of checkpoints, model.pt, model.json
    cli          the command line

Nothing is imported here: ``forecaster`` and ``settings`` need torch and numpy
only, the rest also pandas, matplotlib, tqdm and (baselines) statsmodels.
"""
