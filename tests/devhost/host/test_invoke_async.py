"""An async function invoked from a thread that already runs an event loop (Playwright's
sync API, a notebook) still runs: asyncio.run() cannot nest, so it gets a thread of its own."""

from __future__ import annotations

import asyncio
from pathlib import Path

import azure.functions as func

from devhost.host.discovery import discover
from devhost.host.invoke import Invoker


def test_an_async_function_runs_inside_a_running_loop() -> None:
    app = func.FunctionApp()

    @app.timer_trigger(arg_name="timer", schedule="0 0 * * * *")
    async def tick(timer: func.TimerRequest) -> str:
        await asyncio.sleep(0)
        return "ran"

    [spec] = discover(app, {})
    invoker = Invoker(spec, lambda *_: None, Path.cwd())

    async def from_inside_a_loop() -> str:
        return invoker.invoke(object()).return_value

    assert asyncio.run(from_inside_a_loop()) == "ran"
    assert invoker.invoke(object()).return_value == "ran"  # and from a plain thread
