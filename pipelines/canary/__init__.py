"""Canary evaluation: per-deployment live metrics for one canary step, logged to MLflow.

- `pipelines.canary.evaluate_canary`: the component code (readers, `compute_arm_stats`,
  logging to MLflow, `main()` for the Azure ML command component in ``component.yml``, and
  `collect_local_live_metrics` for the local endpoint).
- `pipelines.canary.live_metrics`: `read_live_metrics`, what the canary gate reads back.
  Light: importable from the Functions app (mlflow-skinny, no pandas).
"""
