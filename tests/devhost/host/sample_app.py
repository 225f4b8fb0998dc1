"""A small FunctionApp module for the `python -m devhost` test (not the real app)."""

from __future__ import annotations

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.route(route="hello/{name}", methods=["GET"])
def hello(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(f"hello {req.route_params['name']}")


@app.queue_trigger(arg_name="item", queue_name="%SAMPLE_QUEUE%", connection="AzureWebJobsStorage")
@app.queue_output(arg_name="$return", queue_name="%SAMPLE_QUEUE%-done",
                  connection="AzureWebJobsStorage")  # fmt: skip
def work(item: func.QueueMessage) -> str:
    return item.get_body().decode()[::-1]
