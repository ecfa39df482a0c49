"""retina's Optuna sweeper for Hydra: ``python -m retina.train -m hydra/sweeper=optuna ...``.

A plugin of the project's own because the upstream ``hydra-optuna-sweeper`` pins
``optuna<3``. Hydra finds it in the ``hydra_plugins`` namespace package; the config it
registers (``hydra/sweeper=optuna``) is in ``config.py``, the sweeper in ``sweeper.py``.
"""
