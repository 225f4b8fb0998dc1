"""The demo's report: each promotion's timeline (traffic on the candidate, the canary gates'
accuracy per arm) as a picture, and an HTML page with the audit trails, a link to the app's
live dashboard and where to look in MLflow."""

from __future__ import annotations

import json
from datetime import datetime
from html import escape as html_escape
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

if TYPE_CHECKING:
    from devhost.demo.story import Milestone, PhaseResult


def _text(value: Any) -> str:
    """A value as HTML text: escaped, None as nothing."""
    return "" if value is None else html_escape(str(value))


def timeline(promotion: dict[str, Any]) -> dict[str, list[Any]]:
    """Traffic on the candidate and the canary gates' accuracy per arm, over time (seconds)."""
    audit = promotion["audit"]
    if not audit:
        return {"t": [], "weight": [], "gate_t": [], "canary": [], "production": []}
    start = datetime.fromisoformat(audit[0]["time"])
    times, weights = [], []
    weight = 0
    for record in audit:
        state = record.get("to_state")
        detail = record.get("detail") or {}
        if state == "canary" and "traffic" in detail:
            weight = int(detail["traffic"])
        elif state in ("production_bake", "completed"):
            weight = 100
        elif state in ("rolled_back", "rejected", "failed"):
            weight = 0
        times.append((datetime.fromisoformat(record["time"]) - start).total_seconds())
        weights.append(weight)
    gate_t, canary, production = [], [], []
    for record in audit:
        if not record["action"].startswith("gate."):
            continue
        for evidence in (record.get("detail") or {}).get("evidence", []):
            if evidence.get("gate") == "canary:accuracy" and evidence.get("values"):
                gate_t.append((datetime.fromisoformat(record["time"]) - start).total_seconds())
                canary.append(evidence["values"].get("canary"))
                production.append(evidence["values"].get("production"))
    return {
        "t": times,
        "weight": weights,
        "gate_t": gate_t,
        "canary": canary,
        "production": production,
    }


def without_key(url: str) -> str:
    """The URL without its `code` (the function key): a report is a file anyone may be sent."""
    parts = urlsplit(url)
    query = [(name, value) for name, value in parse_qsl(parts.query) if name != "code"]
    return urlunsplit(parts._replace(query=urlencode(query)))


def dashboard_section(dashboard_url: str | None, key_file: Path | None = None) -> str:
    """A link to the app's live dashboard (docs/dashboard.md): live while the demo ran, and
    after it with `--keep-open`. Never with the function key: where it is, is said instead."""
    if not dashboard_url:
        return ""
    link = html_escape(without_key(dashboard_url))
    where = html_escape(str(key_file)) if key_file else "the devhost's function key file"
    return (
        "<h2>Dashboard</h2>"
        f"<p><a href='{link}'>{link}</a>: the app's live view of every promotion above "
        "(traffic over time, gate evidence, approvals, the audit trail), served while the demo "
        "ran; run <code>python -m devhost.demo --keep-open</code> to keep it up afterwards. "
        f"It needs the function key (in <code>{where}</code>): open it as "
        "<code>…/dashboard?code=&lt;key&gt;</code>.</p>"
    )


def write_report(
    output_dir: Path,
    phases: list[PhaseResult],
    promotions: dict[str, dict[str, Any]],
    final: dict[str, Any],
    mlflow_url: str | None,
    *,
    dashboard_url: str | None = None,
    key_file: Path | None = None,
    milestones: list[Milestone] | None = None,
) -> tuple[Path, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [phase for phase in phases if phase.promotion_id in promotions]
    figure, axes = plt.subplots(
        len(shown) or 1, 1, figsize=(9, 2.8 * max(1, len(shown))), squeeze=False
    )
    for axis, phase in zip(axes[:, 0], shown, strict=False):
        series = timeline(promotions[str(phase.promotion_id)])
        axis.step(
            series["t"],
            series["weight"],
            where="post",
            color="tab:blue",
            label="traffic on candidate (%)",
        )
        axis.set_ylim(-5, 105)
        axis.set_ylabel("% traffic")
        axis.set_title(f"{phase.name}: v{phase.version} → {phase.outcome}", fontsize=10)
        if series["gate_t"]:
            other = axis.twinx()
            other.plot(
                series["gate_t"], series["canary"], "o-", color="tab:red", label="canary accuracy"
            )
            other.plot(
                series["gate_t"],
                series["production"],
                "s--",
                color="tab:green",
                label="production accuracy",
            )
            other.set_ylim(0, 1.05)
            other.set_ylabel("accuracy (gate)")
            other.legend(loc="center right", fontsize=8)
        axis.legend(loc="upper left", fontsize=8)
    axes[-1, 0].set_xlabel("seconds since the candidate was registered")
    figure.tight_layout()
    png = output_dir / "timeline.png"
    figure.savefig(png, dpi=110)
    plt.close(figure)

    # Every field is escaped: actors, reasons and causes come from people and messages.
    rows = "".join(
        f"<tr><td>{_text(phase.name)}</td><td>v{_text(phase.version)}</td>"
        f"<td>{_text(phase.outcome)}</td><td>{_text(phase.promotion_id)}</td>"
        f"<td>{phase.seconds:.0f} s</td></tr>"
        for phase in phases
    )
    audits = ""
    for promotion_id, promotion in promotions.items():
        lines = "".join(
            f"<tr><td>{_text(str(r['time'])[11:19])}</td><td>{_text(r['action'])}</td>"
            f"<td>{_text(r.get('from_state'))} → {_text(r.get('to_state'))}</td>"
            f"<td>{_text(r.get('actor'))}</td>"
            f"<td>{_text((r.get('detail') or {}).get('cause'))}</td></tr>"
            for r in promotion["audit"]
        )
        audits += f"<h3>{_text(promotion_id)}</h3><table>{lines}</table>"
    production = final.get("production") or {}
    milestone_rows = "".join(
        f"<tr><td>{m.seconds:.0f} s</td><td>{_text(m.what)}</td><td>{_text(m.detail)}</td></tr>"
        for m in milestones or []
    )
    database = output_dir / "local" / "mlflow.db"
    ui_command = f"python -m mlflow ui --backend-store-uri sqlite:///{database}"
    html = output_dir / "report.html"
    html.write_text(
        "<!doctype html><meta charset='utf-8'><title>retrain-orchestrator demo</title>"
        "<style>body{font-family:sans-serif;max-width:960px;margin:2em auto}td{padding:2px 8px}"
        "table{border-collapse:collapse}tr:nth-child(even){background:#f3f3f3}</style>"
        "<h1>retrain-orchestrator demo</h1>"
        f"<p>Production: v{_text(production.get('version'))} "
        f"({_text(production.get('deployment'))})</p>"
        + (f"<h2>Milestones</h2><table>{milestone_rows}</table>" if milestone_rows else "")
        + "<img src='timeline.png' style='max-width:100%'>"
        f"<h2>Promotions</h2><table><tr><th>phase</th><th>version</th><th>outcome</th>"
        f"<th>promotion</th><th>took</th></tr>{rows}</table>"
        f"<h2>Audit trails</h2>{audits}"
        + dashboard_section(dashboard_url, key_file)
        + "<h2>Where to look in MLflow</h2><ul>"
        f"<li>UI: {_text(mlflow_url or ui_command)}</li>"
        "<li>Experiment <b>breast-cancer-retrain</b>: one run per pipeline step; the "
        "evaluate_register run has auc/accuracy and champion_auc/champion_accuracy on the "
        "same holdout.</li>"
        "<li>Experiment <b>retrain-orchestrator-canary</b>: one run per promotion with "
        "per-deployment live metrics at each canary step.</li>"
        "<li>Models → <b>breast-cancer</b>: every version, tagged retrain.stage and "
        "retrain.promotion_id.</li></ul>"
    )
    (output_dir / "summary.json").write_text(
        json.dumps(
            {
                "phases": [phase.__dict__ for phase in phases],
                "milestones": [milestone.__dict__ for milestone in milestones or []],
                "final": final,
            },
            indent=2,
            default=str,
        )
    )
    return png, html
