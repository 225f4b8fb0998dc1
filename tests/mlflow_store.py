"""Point the process-wide MLflow client at a test store, and put it back exactly.

`mlflow.get_registry_uri()` answers the resolved default, so restoring with it would pin the
registry to a path under the working directory for every later test; this restores the
module state itself (None: "follow the default").
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def mlflow_store(uri: str) -> Iterator[None]:
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = saved
