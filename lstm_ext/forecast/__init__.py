"""The forecasting application built on the library: ``python -m lstm_ext
{train,forecast,export}`` on a univariate series (by default the embedded Mauna
Loa weekly CO2 series).

    settings     defaults and allowed values of every setting (TrainConfig, LIMITS)
    series       reading a series from CSV (and the embedded one, in data/)
    windows      the split, scaling and windows a model learns from
    forecaster   the Forecaster module that is exported and deployed, and the
                 recursive forecast past its horizon
    training     the training loop and the whole run (``train``)
    evaluation   test metrics beside baselines, the report, the plots
    artifacts    the one writer and reader of checkpoints, model.pt, model.json
    cli          the command line

Nothing is imported here: ``forecaster`` and ``settings`` need torch and numpy
only, the rest also pandas, matplotlib and tqdm.
"""
