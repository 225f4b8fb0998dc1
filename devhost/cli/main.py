"""`python -m devhost.cli`: what a person does, against local (Azurite) or Azure alike.

Every command goes through the same ports as the app (`orchestrator.bootstrap.Runtime`):
commands are *sent* as envelopes on the app's queues (Service Bus in Azure, Azurite queues
locally) and handled by the running app, never here; data files are uploaded into the
model's data container (`send-data`), or announced many to an event on the data-events hub
(`send-event`, devhost/cli/events.py); status is read from the state store and audit log.
Locally, `score` puts a CSV's rows on a model's endpoint as live traffic, with their labels
as feedback (devhost/cli/traffic.py).
Locally the storage is the running devhost's, found in its state file unless the settings name
one (devhost/cli/local_devhost.py).

A person's command carries a bearer token (the app believes the token, not `--as`): locally,
`--as NAME` mints one from the local issuer (.local/issuer/); against Azure (ENTRA_TENANT_ID
set) it is your Azure credential's (`az login`) for the API app (devhost/cli/commands.py).

This is the entry point: argparse, settings, `main`. What each command does is in
devhost/cli/commands.py; how its result is shown, in devhost/cli/render.py.
Exit codes: 0 done, 2 bad input (unknown model or promotion, a missing flag, bad settings),
1 anything else that failed. See docs/cli.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from devhost.cli.commands import (
    BadInput,
    CliError,
    SentMessage,
    audit_report,
    model_report,
    promotion_report,
    request_pause,
    request_promote_now,
    request_resume,
    request_retrain,
    request_rollback,
    runs_report,
    send_approval,
    send_data,
)
from devhost.cli.local_devhost import use_running_devhost
from devhost.cli.render import (
    render_audit,
    render_model,
    render_promotion,
    render_runs,
    render_sent,
    render_sent_events,
    render_upload,
    report_error,
)
from orchestrator.ports import MAX_AUDIT_PAGE

if TYPE_CHECKING:
    from rich.console import RenderableType

    from orchestrator.bootstrap import Runtime

PROG = "python -m devhost.cli"
EVENT_FORMATS = ("event-grid", "data-ready")  # devhost/cli/events.py
DEAD_LETTER_SOURCES = ("records", "poison-queues", "service-bus", "event-grid")  # dead_letters.py
DEFAULT_PAGE = 100  # as the HTTP API's
MAX_PAGE = MAX_AUDIT_PAGE
PIPED_WIDTH = 140
SETTINGS_HELP = "a local.settings.json whose Values are loaded first (the environment wins)"


class _Parser(argparse.ArgumentParser):
    """Bad arguments raise BadInput (one line, exit 2) instead of printing the usage."""

    def error(self, message: str) -> NoReturn:
        raise BadInput(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--settings",
        type=Path,
        default=argparse.SUPPRESS,
        help=SETTINGS_HELP,
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )

    parser = _Parser(
        prog=PROG,
        description="What a person does with retrain-orchestrator: approve, retrain, roll "
        "back, inspect. Commands are sent on the app's queues; the running app handles them.",
    )
    parser.add_argument("--settings", type=Path, default=None, help=SETTINGS_HELP)
    parser.add_argument(
        "--json", action="store_true", default=False, help="machine-readable output"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        # `help` is %-formatted by argparse, `description` is printed as it is.
        return commands.add_parser(
            name, help=help_text, description=help_text.replace("%%", "%"), parents=[common]
        )

    for decision in ("approve", "reject"):
        sub = add(
            decision, f"{decision} a promotion awaiting approval (sent on the approvals queue)"
        )
        sub.add_argument("promotion_id", metavar="PROMOTION_ID")
        sub.add_argument("--as", dest="actor", required=True, metavar="APPROVER",
                         help="who answers (locally: a token is minted for this name); "
                              "must be one of the model's approvers")  # fmt: skip
        sub.add_argument("--comment", default="")
        sub.add_argument("--step", help="the step answered (default: the promotion's current step)")
        sub.add_argument("--version", help="the candidate version (default: the promotion's)")

    sub = add("retrain", "ask for a training run now (RetrainRequested on the orchestrator queue)")
    sub.add_argument("model", metavar="MODEL")
    sub.add_argument("--data-uri", help="train on this data (default: the data pending)")
    sub.add_argument("--reason", default="manual")
    sub.add_argument("--force", action="store_true", help="skip the minimum of new data")
    sub.add_argument("--as", dest="actor", metavar="WHO", help="who asks (default: cli:<user>)")

    sub = add("rollback", "roll a promotion back to the last known-good model")
    sub.add_argument("promotion_id", metavar="PROMOTION_ID")
    sub.add_argument("--reason", required=True)
    sub.add_argument("--as", dest="actor", metavar="WHO", help="who asks (default: cli:<user>)")

    sub = add(
        "promote-now",
        "skip the remaining canary steps: 100%% on the candidate; or complete a first "
        "model's production bake that waits for traffic",
    )
    sub.add_argument("promotion_id", metavar="PROMOTION_ID")
    sub.add_argument("--as", dest="actor", required=True, metavar="WHO")
    sub.add_argument("--reason", required=True)

    for name, help_text in (
        ("pause", "hold a promotion where it is (no further traffic steps)"),
        ("resume", "resume a paused promotion"),
    ):
        sub = add(name, help_text)
        sub.add_argument("promotion_id", metavar="PROMOTION_ID")
        sub.add_argument("--as", dest="actor", required=True, metavar="WHO")
        sub.add_argument("--reason", default="")

    sub = add("status", "a model's state, or a promotion's audit trail (its first page)")
    sub.add_argument("model", metavar="MODEL", nargs="?")
    sub.add_argument("--promotion", metavar="PROMOTION_ID")
    add_paging(sub, continuation=False)

    sub = add("runs", "a model's training runs that ended, oldest first, a page at a time")
    sub.add_argument("model", metavar="MODEL")
    add_paging(sub)

    sub = add("audit", "a model's audit log (or one promotion's), oldest first, a page at a time")
    sub.add_argument("model", metavar="MODEL")
    sub.add_argument("--promotion", metavar="PROMOTION_ID", help="only this promotion's records")
    add_paging(sub)

    sub = add("send-data", "upload data files where the model's blob trigger watches")
    sub.add_argument("model", metavar="MODEL")
    sub.add_argument("files", metavar="FILE", nargs="+", type=Path)

    sub = add("send-event", "announce data on the data-events hub, many blobs an event: "
              "Event Grid BlobCreated (default) or data-ready events")  # fmt: skip
    sub.add_argument("model", metavar="MODEL")
    sub.add_argument("files", metavar="FILE", nargs="*", type=Path,
                     help="files to upload first (as send-data); a folder: its files")  # fmt: skip
    sub.add_argument("--blob", dest="blobs", action="append", default=[], metavar="NAME",
                     help="a blob already in the model's data container (repeatable)")  # fmt: skip
    sub.add_argument("--under", metavar="PREFIX",
                     help="every blob under this prefix of the model's data container")  # fmt: skip
    sub.add_argument("--format", dest="event_format", choices=EVENT_FORMATS,
                     default="event-grid", help="the events' schema")  # fmt: skip
    sub.add_argument("--per-event", type=int, metavar="N",
                     help="items an event (default: the policy's max_items_per_event)")  # fmt: skip

    sub = add("score", "live traffic on the model's local endpoint: each CSV row a request; "
              "with --feedback, each answer's label too")  # fmt: skip
    sub.add_argument("model", metavar="MODEL")
    sub.add_argument("file", metavar="CSV", type=Path,
                     help="a header row, the feature columns (and the label column)")  # fmt: skip
    sub.add_argument("--feedback", action="store_true",
                     help="post each answered row's label (data.label_column)")  # fmt: skip
    sub.add_argument("--requests", type=positive, metavar="N",
                     help="how many requests (default: each row once; rows repeat)")  # fmt: skip
    sub.add_argument("--endpoint", metavar="NAME",
                     help="one of the model's later rings (default: its endpoint)")  # fmt: skip
    sub.add_argument("--workers", type=positive, default=4, metavar="N",
                     help="requests in flight at once (default 4)")  # fmt: skip

    sub = add("dead-letters", "list or replay messages that could not be handled")
    actions = sub.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    actions.required = True
    listing = actions.add_parser(
        "list", help="every dead letter: records, poison queues, the Service Bus DLQ",
        parents=[common],
    )  # fmt: skip
    listing.add_argument("--source", choices=DEAD_LETTER_SOURCES, help="only this store")
    replay = actions.add_parser(
        "replay", help="send one back to its queue, once (the original body)", parents=[common]
    )
    replay.add_argument("dead_letter_id", metavar="ID", help="as `dead-letters list` shows it")
    return parser


def page_limit(text: str) -> int:
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_PAGE):
        raise argparse.ArgumentTypeError(f"a whole number from 1 to {MAX_PAGE}, not {text!r}")
    return int(text)


def positive(text: str) -> int:
    if not (text.isascii() and text.isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError(f"a whole number from 1, not {text!r}")
    return int(text)


def add_paging(sub: argparse.ArgumentParser, continuation: bool = True) -> None:
    sub.add_argument("--limit", type=page_limit, default=DEFAULT_PAGE,
                     help=f"records per page, 1..{MAX_PAGE} (default {DEFAULT_PAGE})")  # fmt: skip
    if continuation:
        sub.add_argument("--continuation", metavar="TOKEN",
                         help="the next page: the token the previous page printed")  # fmt: skip
    sub.add_argument("--all", dest="all_pages", action="store_true",
                     help="every page from there on (follows the tokens)")  # fmt: skip


def load_cli_settings(path: Path | None) -> None:
    """Export a local.settings.json's Values into the environment (a variable already set
    wins, as with `func start`)."""
    if path is None:
        return
    from devhost.host.settings import DevHostError, apply_settings, load_local_settings

    if not path.is_file():
        raise BadInput(f"{path}: no such settings file")
    try:
        apply_settings(load_local_settings(path))
    except DevHostError as exc:
        raise BadInput(str(exc)) from exc


def runtime_from_environment() -> Runtime:
    from orchestrator.bootstrap import Runtime
    from orchestrator.settings import SettingsError, load_settings

    try:
        return Runtime(load_settings())
    except SettingsError as exc:
        raise BadInput(str(exc)) from exc


def _run(arguments: argparse.Namespace, runtime: Runtime) -> tuple[Any, list[RenderableType]]:
    """Run one parsed command: (its JSON document, its rich renderables)."""
    command = arguments.command
    if command in ("approve", "reject"):
        sent = send_approval(
            runtime,
            arguments.promotion_id,
            command,
            arguments.actor,
            comment=arguments.comment,
            step=arguments.step,
            candidate_version=arguments.version,
        )
        return sent.to_json(), render_sent(sent)
    if command == "retrain":
        sent = request_retrain(
            runtime,
            arguments.model,
            data_uri=arguments.data_uri,
            reason=arguments.reason,
            force=arguments.force,
            requested_by=arguments.actor,
        )
        return sent.to_json() | {"run_id": sent.envelope.payload["run_id"]}, render_sent(sent)
    if command == "send-data":
        upload = send_data(runtime, arguments.model, arguments.files)
        return upload.to_json(), render_upload(upload)
    if command == "send-event":
        from devhost.cli.events import send_events

        sent_events = send_events(
            runtime,
            arguments.model,
            files=arguments.files,
            blob_names=arguments.blobs,
            under=arguments.under,
            event_format=arguments.event_format,
            per_event=arguments.per_event,
        )
        return sent_events.to_json(), render_sent_events(sent_events)
    if command == "score":
        from devhost.cli.render import render_traffic
        from devhost.cli.traffic import send_traffic

        traffic = send_traffic(
            runtime,
            arguments.model,
            arguments.file,
            feedback=arguments.feedback,
            requests=arguments.requests,
            endpoint=arguments.endpoint,
            workers=arguments.workers,
        )
        return traffic.to_json(), render_traffic(traffic)
    if command == "dead-letters":
        from devhost.cli import dead_letters

        if arguments.action == "list":
            views = dead_letters.list_dead_letters(runtime, arguments.source)
            document = {"dead_letters": [view.to_json() for view in views]}
            return document, dead_letters.render_dead_letters(views)
        replayed = dead_letters.replay_dead_letter(runtime, arguments.dead_letter_id)
        return replayed.to_json(), dead_letters.render_replayed(replayed)
    if command == "status":
        if arguments.promotion:
            report = promotion_report(
                runtime, arguments.promotion, limit=arguments.limit, all_pages=arguments.all_pages
            )
            return report, render_promotion(report)
        report = model_report(runtime, arguments.model)
        return report, render_model(report)
    if command == "runs":
        report = runs_report(
            runtime,
            arguments.model,
            limit=arguments.limit,
            continuation=arguments.continuation,
            all_pages=arguments.all_pages,
        )
        return report, render_runs(report)
    if command == "audit":
        report = audit_report(
            runtime,
            arguments.model,
            promotion_id=arguments.promotion,
            limit=arguments.limit,
            continuation=arguments.continuation,
            all_pages=arguments.all_pages,
        )
        return report, render_audit(report)
    senders: dict[str, Callable[[], SentMessage]] = {
        "rollback": lambda: request_rollback(
            runtime, arguments.promotion_id, arguments.reason, arguments.actor
        ),
        "promote-now": lambda: request_promote_now(
            runtime, arguments.promotion_id, arguments.reason, arguments.actor
        ),
        "pause": lambda: request_pause(
            runtime, arguments.promotion_id, arguments.actor, arguments.reason
        ),
        "resume": lambda: request_resume(
            runtime, arguments.promotion_id, arguments.actor, arguments.reason
        ),
    }
    sent = senders[command]()
    return sent.to_json(), render_sent(sent)


def _check_arguments(arguments: argparse.Namespace) -> None:
    """What argparse cannot say: checked before any settings are read."""
    if arguments.command == "status" and bool(arguments.model) == bool(arguments.promotion):
        raise BadInput("status needs a MODEL or --promotion PROMOTION_ID (one of them)")
    actor = getattr(arguments, "actor", None)
    if actor is not None and not actor.strip():
        raise BadInput("--as must name who you are")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def main(argv: list[str] | None = None, *, runtime: Runtime | None = None) -> int:
    """Run one command. `runtime` replaces the one built from the settings (tests)."""
    from rich.console import Console

    out = Console(highlight=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:  # piped: do not squeeze to 80
        out = Console(highlight=False, width=PIPED_WIDTH)
    err = Console(stderr=True, highlight=False)
    as_json = "--json" in (argv if argv is not None else sys.argv[1:])
    try:
        try:
            arguments = build_parser().parse_args(argv)
        except SystemExit as exc:  # --help
            return int(exc.code or 0)
        as_json = arguments.json
        _check_arguments(arguments)
        if runtime is None:
            load_cli_settings(arguments.settings)
            use_running_devhost(settings_given=arguments.settings is not None)
            runtime = runtime_from_environment()
        document, renderables = _run(arguments, runtime)
    except CliError as exc:
        report_error(err, _one_line(exc), exc.exit_code, as_json)
        return exc.exit_code
    except Exception as exc:  # Azure, network, policy files: one line, exit 1
        from domain.policy import PolicyError

        code = 2 if isinstance(exc, PolicyError) else 1
        report_error(err, f"{type(exc).__name__}: {_one_line(exc)}", code, as_json)
        return code
    if as_json:
        print(json.dumps(document, indent=2, default=str))
    else:
        for renderable in renderables:
            out.print(renderable, soft_wrap=isinstance(renderable, str))
    return 0
