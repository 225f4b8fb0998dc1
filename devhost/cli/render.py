"""How the CLI shows results to a person: rich tables, trees and lines for each command's
result, and the one-line error (or its JSON) on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from devhost.cli.commands import DataUpload, SentMessage
    from devhost.cli.events import SentEvents
    from devhost.cli.traffic import Traffic

_OUTCOME_STYLE = {
    "pass": "green",
    "fail": "red",
    "inconclusive": "yellow",
    "completed": "green",
    "rolled_back": "red",
    "rejected": "red",
    "failed": "red",
}


def _when(value: Any) -> str:
    if not value:
        return "-"
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + ("Z" if moment.utcoffset() is not None else "")


def _styled(text: Any) -> str:
    from rich.markup import escape

    style = _OUTCOME_STYLE.get(str(text))
    return f"[{style}]{escape(str(text))}[/]" if style else escape(str(text))


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _evidence_line(evidence: Mapping[str, Any]) -> str:
    from rich.markup import escape

    parts = [f"{escape(str(evidence.get('gate')))} {_styled(evidence.get('outcome'))}"]
    if evidence.get("reason"):
        parts.append(escape(str(evidence["reason"])))
    values = evidence.get("values") or {}
    if values:
        parts.append(", ".join(f"{key}={_number(value)}" for key, value in values.items()))
    samples = evidence.get("samples") or {}
    if samples:
        parts.append("n: " + ", ".join(f"{key}={value}" for key, value in samples.items()))
    if evidence.get("p_value") is not None:
        parts.append(f"p={_number(evidence['p_value'])}")
    return " — ".join(parts)


def _serving(document: Mapping[str, Any] | None) -> str:
    if not document:
        return "none"
    return f"v{document['version']} ({document['deployment']}, since {_when(document['since'])})"


def _key_detail(detail: Mapping[str, Any], limit: int = 100) -> str:
    """The parts of an audit detail a person reads first; big structures are counted."""
    first = ("cause", "reason", "decision", "comment", "version", "traffic", "step", "outcome")
    ordered = [key for key in first if key in detail] + sorted(set(detail) - set(first))
    parts = []
    for key in ordered:
        value = detail[key]
        if value in (None, "", [], {}):
            continue
        if key in ("by", "requested_by", "approver", "caused_by"):  # the actor column
            continue
        if isinstance(value, list) and all(isinstance(v, dict) and "gate" in v for v in value):
            text = ", ".join(f"{v['gate']} {v.get('outcome', '')}".strip() for v in value)
        elif isinstance(value, list):
            text = (
                f"{len(value)} item(s)"
                if any(isinstance(v, dict) for v in value)
                else ", ".join(map(str, value))
            )
        elif isinstance(value, dict):
            text = (
                ", ".join(f"{k}={_number(v)}" for k, v in value.items())
                if all(not isinstance(v, (dict, list)) for v in value.values())
                else f"{len(value)} field(s)"
            )
        else:
            text = _number(value)
        parts.append(f"{key}: {text}")
    line = "; ".join(parts)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _actor(record: Mapping[str, Any]) -> str:
    """Who caused an audit record. A transition keeps its person in `detail.caused_by`
    while the record's `actor` may say "system"; the person is what a reader wants."""
    actor = str(record.get("actor") or "system")
    caused_by = (record.get("detail") or {}).get("caused_by")
    if actor == "system" and caused_by:
        return str(caused_by)
    return actor


def render_model(report: Mapping[str, Any]) -> list[RenderableType]:
    from rich.markup import escape
    from rich.table import Table
    from rich.tree import Tree

    out: list[RenderableType] = []
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("model", escape(str(report["model"])))
    summary.add_row("production", escape(_serving(report.get("production"))))
    summary.add_row("last known good", escape(_serving(report.get("last_known_good"))))
    queued = report.get("queued_candidates") or []
    if queued:
        summary.add_row("queued", ", ".join(f"v{item['version']}" for item in queued))
    retrain = report.get("retrain") or {}
    job = retrain.get("current_job")
    summary.add_row(
        "training",
        escape(f"{job['run_id']} ({job['status']}, since {_when(job['submitted_at'])})")
        if job
        else "idle",
    )
    pending = retrain.get("pending") or {}
    window = retrain.get("window")
    data = f"{pending.get('count', 0)} item(s) pending"
    if window:
        data += f", window closes {_when(window['closes_at'])}"
    summary.add_row("new data", data)
    if report.get("pending_effects"):
        summary.add_row("pending effects", str(report["pending_effects"]))
    if report.get("effects_given_up"):
        summary.add_row("effects given up", f"[yellow]{report['effects_given_up']}[/yellow]")
    alert = report.get("traffic_alert")
    if alert:
        summary.add_row(
            "[bold red]traffic not restored[/bold red]",
            f"{alert['traffic']} since {_when(alert['since'])}: {alert['error']}",
        )
    drift = report.get("endpoint_drift")
    if drift:
        summary.add_row(
            "[yellow]endpoint drift[/yellow]",
            f"serves {drift['actual_traffic']}, the state says {drift['expected_traffic']}"
            + (f"; missing {', '.join(drift['missing'])}" if drift.get("missing") else ""),
        )
    summary.add_row("state version", str(report.get("version")))
    out.append(summary)

    active = report.get("active_promotion")
    if active:
        tree = Tree(
            f"[bold]active promotion[/] {escape(active['id'])} — candidate "
            f"v{escape(str(active['candidate_version']))}"
        )
        state = (
            f"status {_styled(active['status'])}, step {escape(active['step'])}, "
            f"traffic {active.get('traffic_weight', 0)}% on the candidate"
        )
        if active.get("paused"):
            state += f" [yellow]paused by {escape(str(active.get('paused_by')))}[/]"
            if active.get("pause_reason"):
                state += f": {escape(active['pause_reason'])}"
        tree.add(state)
        if active.get("baseline"):
            tree.add(f"baseline {escape(_serving(active['baseline']))}")
        if active.get("status") == "awaiting_approval":
            tree.add(
                f"[yellow]awaiting approval[/] until {_when(active.get('approval_expires_at'))}"
            )
        approval = active.get("approval")
        if approval:
            tree.add(
                f"approval: {_styled(approval['decision'])} by {escape(approval['approver'])}"
                + (f" — {escape(approval['comment'])}" if approval.get("comment") else "")
            )
        if active.get("check_due_at"):
            tree.add(f"next check {_when(active['check_due_at'])}")
        # Why a step waits: a canary step's samples, a first model's live traffic.
        for waiting in (report.get("canary_samples"), report.get("waiting_for_traffic")):
            if waiting:
                tree.add(f"[yellow]{escape(waiting['summary'])}[/]")
                tree.add(f"then: {escape(waiting['when_time_runs_out'])}")
        gates = active.get("gates") or []
        if gates:
            gate_branch = tree.add("gates")
            for gate in gates:
                node = gate_branch.add(
                    f"{escape(gate['step'])} {_styled(gate['outcome'])} at {_when(gate['at'])}"
                )
                for evidence in gate.get("evidence") or []:
                    node.add(_evidence_line(evidence))
        out.append(tree)
    else:
        out.append("[dim]no active promotion[/]")

    history = report.get("recent_promotions") or []
    if history:
        table = Table(title="recent promotions", title_justify="left")
        for column in ("promotion", "version", "outcome", "finished", "reason"):
            table.add_column(column)
        for entry in reversed(history[-10:]):
            table.add_row(
                escape(entry["promotion_id"]),
                f"v{escape(str(entry['candidate_version']))}",
                _styled(entry["outcome"]),
                _when(entry.get("finished_at")),
                escape(str(entry.get("reason", ""))),
            )
        out.append(table)
    runs = retrain.get("runs") or []
    if runs:
        table = Table(title="recent training runs", title_justify="left")
        for column in ("run", "status", "version", "ended", "reason"):
            table.add_column(column)
        for run in reversed(runs[-5:]):
            table.add_row(
                escape(run["run_id"]),
                _styled(run["status"]),
                escape(str(run.get("registered_version") or "-")),
                _when(run.get("ended_at")),
                escape(str(run.get("error") or run.get("reason") or "")),
            )
        out.append(table)
    return out


def render_promotion(report: Mapping[str, Any]) -> list[RenderableType]:
    from rich.markup import escape

    promotion = report["promotion"]
    status = promotion.get("status") or promotion.get("outcome")
    header = (
        f"[bold]{escape(promotion.get('id') or promotion.get('promotion_id', ''))}[/] "
        f"({escape(str(report['model']))}, "
        f"candidate v{escape(str(promotion['candidate_version']))}) — {_styled(status)}"
    )
    if promotion.get("step"):
        header += (
            f", step {escape(promotion['step'])}, traffic {promotion.get('traffic_weight', 0)}%"
        )
    if promotion.get("reason"):
        header += f" — {escape(promotion['reason'])}"
    table = _audit_table("audit trail", report.get("audit") or [])
    promotion_id = promotion.get("id") or promotion.get("promotion_id", "")
    more = _more(report, f"audit {report['model']} --promotion {promotion_id}")
    return [header, table, *more]


def _audit_table(title: str, records: list[Mapping[str, Any]]) -> RenderableType:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, title_justify="left", expand=True)
    table.add_column("time", no_wrap=True)
    table.add_column("action", no_wrap=True)
    table.add_column("from → to")
    table.add_column("actor", overflow="fold")
    table.add_column("detail", ratio=1)
    for record in records:
        before, after = record.get("from_state"), record.get("to_state")
        transition = f"{before or '-'} → {after or '-'}" if before != after else (after or "-")
        table.add_row(
            _when(record["time"]),
            escape(record["action"]),
            escape(transition),
            escape(_actor(record)),
            escape(_key_detail(record.get("detail") or {})),
        )
    return table


def _more(report: Mapping[str, Any], command: str) -> list[RenderableType]:
    """The line that says how to read the next page, when there is one."""
    from rich.markup import escape

    token = report.get("continuation")
    if not token:
        return []
    return [f"[dim]more: {escape(command)} --continuation {escape(token)} (or --all)[/]"]


def render_audit(report: Mapping[str, Any]) -> list[RenderableType]:
    promotion = report.get("promotion_id")
    title = f"audit of {report['model']}" + (f", promotion {promotion}" if promotion else "")
    command = f"audit {report['model']}" + (f" --promotion {promotion}" if promotion else "")
    return [_audit_table(title, report.get("records") or []), *_more(report, command)]


def render_runs(report: Mapping[str, Any]) -> list[RenderableType]:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"training runs of {report['model']}", title_justify="left")
    for column in ("run", "status", "version", "ended", "data", "reason or error"):
        table.add_column(column)
    for run in report.get("runs") or []:
        count = run.get("data_count")
        table.add_row(
            escape(str(run.get("run_id"))),
            _styled(run.get("status")),
            escape(str(run.get("registered_version") or "-")),
            _when(run.get("ended_at")),
            "-" if count is None else f"{count} item(s)",
            escape(str(run.get("error") or run.get("reason") or "")),
        )
    return [table, *_more(report, f"runs {report['model']}")]


def render_sent(sent: SentMessage) -> list[RenderableType]:
    from rich.markup import escape

    envelope = sent.envelope
    lines = [
        f"[green]sent[/] {envelope.type} for {escape(envelope.model)} on queue "
        f"{escape(sent.queue)} — message id [bold]{escape(envelope.message_id)}[/]"
    ]
    payload = envelope.payload
    if envelope.type == "ApprovalDecision":
        lines.append(
            f"{payload['decision']} promotion {escape(payload['promotion_id'])}, step "
            f"{escape(payload['step'])}, candidate v{escape(payload['candidate_version'])}, "
            f"as {escape(payload['approver'])}"
        )
        lines.append(
            f"the orchestrator checks {escape(payload['approver'])} against "
            f"{escape(envelope.model)}'s approvers when it handles the message; see "
            f"`status --promotion {escape(payload['promotion_id'])}`"
        )
    elif envelope.type == "RetrainRequested":
        lines.append(f"run id [bold]{escape(payload['run_id'])}[/]")
        lines.append(f"follow it with `status {escape(envelope.model)}`")
    elif envelope.promotion_id:
        lines.append(f"follow it with `status --promotion {escape(envelope.promotion_id)}`")
    lines.extend(f"[yellow]note:[/] {escape(note)}" for note in sent.notes)
    return lines


def render_upload(upload: DataUpload) -> list[RenderableType]:
    from rich.markup import escape

    lines: list[RenderableType] = [
        f"[green]uploaded[/] {len(upload.blobs)} file(s) for {escape(upload.model)}:"
    ]
    lines.extend(f"  {escape(blob.url)}" for blob in upload.blobs)
    lines.extend(f"[yellow]note:[/] {escape(note)}" for note in upload.notes)
    lines.append(
        f"the data container's Event Grid subscription picks them up; follow it with "
        f"`status {escape(upload.model)}`"
    )
    return lines


def render_sent_events(sent: SentEvents) -> list[RenderableType]:
    from rich.markup import escape

    lines: list[RenderableType] = []
    if sent.uploaded:
        lines.append(
            f"[green]uploaded[/] {sent.uploaded} file(s) to {escape(sent.blobs[0].container)}"
        )
    lines.append(
        f"[green]sent[/] {len(sent.blobs)} {escape(sent.format)} item(s) for {escape(sent.model)} "
        f"in {sent.events} event(s) ({sent.sends} send(s)) on hub {escape(sent.hub)} "
        f"({escape(sent.route)})"
    )
    shown = sent.blobs[:5]
    lines.extend(f"  {escape(blob.url)}" for blob in shown)
    if len(sent.blobs) > len(shown):
        lines.append(f"  ... and {len(sent.blobs) - len(shown)} more (--json lists them all)")
    lines.extend(f"[yellow]note:[/] {escape(note)}" for note in sent.notes)
    lines.append(
        f"the app's data_events function takes them; follow it with `status {escape(sent.model)}`"
    )
    return lines


def render_traffic(traffic: Traffic) -> list[RenderableType]:
    from rich.markup import escape

    served = ", ".join(f"{escape(name)} {count}" for name, count in sorted(traffic.served.items()))
    lines: list[RenderableType] = [
        f"[green]scored[/] {traffic.requests} request(s) of {escape(traffic.file)} on "
        f"{escape(traffic.url)}: {traffic.answered} answered ({served or 'none'})"
    ]
    if traffic.failed:
        failed = ", ".join(
            f"{count} {escape(kind)}" for kind, count in sorted(traffic.failed.items())
        )
        lines.append(f"[yellow]failed:[/] {failed}; the first: {escape(traffic.first_error or '')}")
    if traffic.matched is not None:
        lines.append(
            f"feedback: {traffic.feedback} label(s) accepted; {traffic.matched} of "
            f"{traffic.answered} answer(s) matched their label"
        )
    lines.append(f"what a bake or canary step still needs: `status {escape(traffic.model)}`")
    return lines


def report_error(err: Console, message: str, code: int, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"error": message, "exit_code": code}), file=sys.stderr)
    else:
        from rich.markup import escape

        err.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
