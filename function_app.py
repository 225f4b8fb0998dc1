"""The Azure Functions app (Python v2 programming model).

Registers the blueprints in triggers/. Imports nothing heavy: azure-ai-ml, mlflow,
scikit-learn, pandas and scipy are loaded only inside the code paths that use them, and the
runtime (clients, policies) is built on first use, so the host indexes the app quickly.
Under a Functions host the settings are checked here, so a bad one fails the app at start.
"""

from __future__ import annotations

import os

import azure.functions as func

from triggers import dashboard, data, health, http_api, maintenance, messages

if os.environ.get("FUNCTIONS_WORKER_RUNTIME"):
    # Under a Functions host (Azure, func start, devhost): a missing or malformed setting
    # stops the app here, as the host indexes it, naming the setting, instead of failing
    # every invocation. check_environment() applies the rules the Settings model is built
    # from, in plain Python: no pydantic at import (it would double the cold start). The
    # model itself is built by the first invocation, which needs pydantic anyway.
    from orchestrator.settings import check_environment

    check_environment()

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in (health.bp, http_api.bp, dashboard.bp, data.bp, messages.bp, maintenance.bp):
    app.register_functions(blueprint)
