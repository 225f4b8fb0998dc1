"""The Azure Functions app (Python v2 programming model).

Registers the blueprints in triggers/. Imports nothing heavy: azure-ai-ml, mlflow,
scikit-learn, pandas and scipy are loaded only inside the code paths that use them, so the
host indexes the app and answers its first request quickly (cold start).
"""

from __future__ import annotations

import azure.functions as func

from triggers import health

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(health.bp)
