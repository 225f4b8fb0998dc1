"""Service Bus queues: the orchestrator's own commands and scheduled checks, and people's
approvals. A message that can never be handled is dead-lettered at once with its reason
(recorded in the `dead-letters` container, then completed); a transient failure raises, so
Service Bus redelivers it and, after MaxDeliveryCount, moves it to the queue's own dead-letter
queue. Not the SDK-type binding that could dead-letter it there itself: it loads the Service
Bus SDK, grpc and uamqp when the host indexes the app, and its settlement runs only inside the
real worker (docs/reliability.md). `devhost.cli dead-letters` lists and replays both."""

from __future__ import annotations

import logging

import azure.functions as func

log = logging.getLogger(__name__)

bp = func.Blueprint()

# What may arrive on each queue. The app's own (internal) types also need their MAC, which the
# handler checks; a person's commands need a verified identity.
APPROVAL_TYPES = frozenset({"ApprovalDecision"})
OPERATOR_TYPES = frozenset(
    {"RollbackRequested", "PromoteNow", "PausePromotion", "ResumePromotion", "RetrainRequested"}
)


def handle_message(
    message: func.ServiceBusMessage, source: str, allowed: frozenset[str] | None = None
) -> str:
    from orchestrator.bootstrap import get_runtime
    from orchestrator.messages import InvalidMessage, parse_envelope

    runtime = get_runtime()
    body = message.get_body()
    properties = {
        "message_id": getattr(message, "message_id", None),
        "delivery_count": getattr(message, "delivery_count", None),
    }
    try:
        try:
            envelope = parse_envelope(body)
        except InvalidMessage:
            raise
        except (ValueError, RecursionError) as exc:
            # json.loads past its limits (an integer literal over Python's digit limit,
            # nesting deeper than the recursion limit): as malformed as bad JSON, and a
            # redelivery would fail the same way.
            raise InvalidMessage(f"body is not JSON: {type(exc).__name__}: {exc}"[:300]) from exc
        if allowed is not None and envelope.type not in allowed:
            raise InvalidMessage(
                f"{envelope.type} is not accepted on the {source} queue "
                f"(only {', '.join(sorted(allowed))})"
            )
        # A sender's own trace context (the Service Bus SDK's application properties): linked.
        sent = getattr(message, "application_properties", None) or {}
        sender_trace = sent.get("traceparent") or sent.get("Diagnostic-Id")
        outcome = runtime.handlers.handle(
            envelope, sender_trace=sender_trace if isinstance(sender_trace, str) else None
        )
    except InvalidMessage as exc:
        runtime.dead_letters.record(source, exc.reason, body, properties)
        log.error("dead-lettered a %s message: %s", source, exc.reason)
        return "dead-lettered"
    log.info(
        "%s %s for %s: %s%s",
        envelope.type,
        envelope.message_id,
        envelope.model,
        outcome.status,
        f" ({outcome.reason})" if outcome.reason else "",
    )
    return outcome.status


@bp.service_bus_queue_trigger(
    arg_name="message", queue_name="%ORCHESTRATOR_QUEUE%", connection="ServiceBusConnection"
)
def orchestrator_queue(message: func.ServiceBusMessage) -> None:
    from orchestrator.signing import INTERNAL_TYPES

    handle_message(message, "orchestrator", INTERNAL_TYPES | OPERATOR_TYPES)


@bp.service_bus_queue_trigger(
    arg_name="message", queue_name="%APPROVALS_QUEUE%", connection="ServiceBusConnection"
)
def approvals_queue(message: func.ServiceBusMessage) -> None:
    # Only answers from people arrive here: no one can drive a gate check through it.
    handle_message(message, "approvals", APPROVAL_TYPES)
