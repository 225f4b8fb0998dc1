"""`score`: a CSV's rows as live traffic on a model's local endpoint, their labels as feedback,
over real HTTP against the real local endpoint server (a real MLflow model), read back the way
the canary and the production bake read it (`collect_local_live_metrics`)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from adapters.local_endpoint import LocalEndpoint
from devhost.cli.main import main
from pipelines.canary.evaluate_canary import collect_local_live_metrics
from tests.endpoint_fixtures import Registry, Server, wait_until_done
from tests.fakes import FakeWorld, fake_runtime, fake_settings
from tests.harness import policy_yaml

ENDPOINT = "bc-ep"  # policy_yaml's endpoint for model "bc"
LABEL = "diagnosis"  # the policy names its label column


@pytest.fixture(scope="module")
def serving(server: Server, registry: Registry) -> Iterator[LocalEndpoint]:
    """Model v1 serves all of bc-ep."""
    with LocalEndpoint(server.url, ENDPOINT, key=server.key) as endpoint:
        endpoint.deploy(registry.model, "1", "bc-v1")
        assert wait_until_done(endpoint, "bc-v1").state == "succeeded"
        endpoint.set_traffic({"bc-v1": 100})
        yield endpoint


def world(server: Server, model: str = "bc", key: str | None = None) -> FakeWorld:
    """A runtime whose settings name the endpoint server, as the CLI's do once it has read the
    running devhost's state file; the policy of `model` on `<model>-ep`, its label column
    `diagnosis`."""
    policy = policy_yaml(model).replace(
        f"prefix: {model}/}}", f"prefix: {model}/, label_column: {LABEL}}}"
    )
    assert LABEL in policy
    settings = fake_settings(LOCAL_ENDPOINT_URL=server.url, LOCAL_ENDPOINT_KEY=key or server.key)
    return fake_runtime(policy, settings=settings)


def write_csv(registry: Registry, path: Path, *, label: bool = True) -> Path:
    frame = registry.features.copy()
    if label:
        frame[LABEL] = registry.labels
    frame.to_csv(path, index=False)
    return path


def test_each_row_is_a_request_and_its_label_the_feedback_the_gates_count(
    server: Server, serving: LocalEndpoint, registry: Registry, tmp_path: Path, capsys
) -> None:
    data = write_csv(registry, tmp_path / "bc.csv")
    rows = len(registry.features)
    wanted = rows + 25  # more requests than rows: the rows again, from the first
    start = datetime.now(UTC) - timedelta(seconds=1)

    code = main(
        ["score", "bc", str(data), "--feedback", "--requests", str(wanted), "--json"],
        runtime=world(server).runtime,
    )

    out = capsys.readouterr()
    assert code == 0, out.err
    sent = json.loads(out.out)
    assert (sent["requests"], sent["answered"], sent["feedback"]) == (wanted, wanted, wanted)
    assert sent["served"] == {"bc-v1": wanted} and sent["failed"] == {}
    assert sent["url"] == f"{server.url}/{ENDPOINT}/score"
    serving.flush_records()
    end = datetime.now(UTC) + timedelta(seconds=1)
    live = collect_local_live_metrics(
        server.records_path(ENDPOINT), registry.tracking_uri, "p-score", 0, ["bc-v1"], start, end
    )
    arm = live.arms["bc-v1"]
    assert (arm.requests, arm.errors, arm.labeled) == (wanted, 0, wanted)
    assert arm.correct == sent["matched"] and arm.correct > 0.8 * wanted
    with sqlite3.connect(server.records_path(ENDPOINT)) as db:
        recorded = db.execute(
            "SELECT r.inputs, f.label FROM records r JOIN feedback f USING (request_id) "
            "WHERE r.request_id LIKE 'cli-%' AND r.ts >= ?",
            (start.timestamp(),),
        ).fetchall()
    assert len(recorded) == wanted
    # Each request carried one CSV row (every column but the label) and its feedback that
    # row's label: the first row's features always come with the first row's label.
    # The label goes as a number (the JSON the server keeps), as the training data had it.
    first = registry.features.iloc[0].tolist()
    labels = [json.loads(label) for inputs, label in recorded if row_of(inputs) == [first]]
    assert labels == [int(registry.labels.iloc[0])] * 2
    assert json.loads(recorded[0][0])["input_data"]["columns"] == list(registry.features.columns)


def row_of(inputs: str) -> list[list[float]]:
    return json.loads(inputs)["input_data"]["data"]  # type: ignore[no-any-return]


def test_without_feedback_the_label_column_may_be_absent(
    server: Server, serving: LocalEndpoint, registry: Registry, tmp_path: Path, capsys
) -> None:
    data = write_csv(registry, tmp_path / "features.csv", label=False)

    code = main(
        ["score", "bc", str(data), "--requests", "5", "--json"], runtime=world(server).runtime
    )

    sent = json.loads(capsys.readouterr().out)
    assert code == 0 and sent["answered"] == 5 and sent["feedback"] == 0
    assert sent["matched"] is None


def test_nothing_serving_yet_stops_at_once_with_the_endpoint_s_reason(
    server: Server, registry: Registry, tmp_path: Path, capsys
) -> None:
    """A first model not in production yet: its endpoint has nothing taking traffic. The
    server's 503 says so and where to look; one request is enough to know."""
    data = write_csv(registry, tmp_path / "bc.csv")
    runtime = world(server, "quiet").runtime
    created = httpx.put(f"{server.url}/quiet-ep", headers=server.headers)
    assert created.status_code in (200, 201)

    code = main(["score", "quiet", str(data), "--feedback", "--workers", "1"], runtime=runtime)

    error = capsys.readouterr().err
    assert code == 1
    assert "nothing serves on endpoint quiet-ep yet: it has no deployment yet" in error
    assert "devhost.cli status" in error  # the server's hint
    assert "[0 of 1 request(s) answered]" in error


def test_an_endpoint_that_does_not_exist_or_a_wrong_key_stops_it(
    server: Server, serving: LocalEndpoint, registry: Registry, tmp_path: Path, capsys
) -> None:
    data = write_csv(registry, tmp_path / "bc.csv")
    runtime = world(server, "nowhere").runtime
    assert main(["score", "nowhere", str(data), "--requests", "50"], runtime=runtime) == 1
    error = capsys.readouterr().err
    assert "HTTP 404: endpoint nowhere-ep not found" in error and "[0 of" in error

    wrong = world(server, key="x" * 32).runtime
    assert main(["score", "bc", str(data), "--requests", "50"], runtime=wrong) == 1
    error = capsys.readouterr().err
    assert "HTTP 401" in error and "[0 of" in error


def test_a_csv_the_model_cannot_take_is_bad_input_naming_the_file_line_and_column(
    server: Server, registry: Registry, tmp_path: Path, capsys
) -> None:
    runtime = world(server).runtime
    no_label = write_csv(registry, tmp_path / "no-label.csv", label=False)
    assert main(["score", "bc", str(no_label), "--feedback"], runtime=runtime) == 2
    error = capsys.readouterr().err
    assert f"no-label.csv: no label column '{LABEL}'" in error

    bad = tmp_path / "bad.csv"
    lines = write_csv(registry, bad).read_text().splitlines()
    lines[3] = "oops," + lines[3].split(",", 1)[1]
    bad.write_text("\n".join(lines) + "\n")
    assert main(["score", "bc", str(bad), "--feedback"], runtime=runtime) == 2
    column = registry.features.columns[0]
    assert f"bad.csv line 4: column '{column}': 'oops' is not a number" in capsys.readouterr().err

    assert main(["score", "bc", str(tmp_path / "missing.csv")], runtime=runtime) == 2
    assert "missing.csv: no such file" in capsys.readouterr().err
    assert main(["score", "bc", str(no_label), "--endpoint", "elsewhere"], runtime=runtime) == 2
    assert "bc has no endpoint 'elsewhere'" in capsys.readouterr().err
