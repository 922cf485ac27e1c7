"""Pure machine learning: networks, training, metrics, tuning (and the MLflow registry adapter).

No database, no clock here; heavy libraries (torch, optuna, mlflow) are imported inside functions.
"""
