"""The Azure Functions app (Python v2 programming model).

Registers the blueprints in triggers/. Imports nothing heavy: azure-ai-ml, mlflow,
scikit-learn, pandas and scipy are loaded only inside the code paths that use them, and the
runtime (clients, policies) is built on first use, so the host indexes the app quickly.
"""

from __future__ import annotations

import azure.functions as func

from triggers import data, health, http_api, maintenance, messages

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in (health.bp, http_api.bp, data.bp, messages.bp, maintenance.bp):
    app.register_functions(blueprint)
