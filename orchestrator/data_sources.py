"""The service layer's check of where a retrain command's data comes from.

Every entry checks data URIs as it parses them (triggers/payloads.py, triggers/data.py); this
is the check behind them all, for whatever reaches a handler (a RetrainRequested from HTTP or
the CLI, a DataLanded on a queue): a data URI outside the data account, the model's container
and prefix, or carrying a SAS token makes the message an InvalidMessage, before anything is
decided or stored. The rules are `domain.data_location.check_data_uri`'s.
"""

from __future__ import annotations

from pydantic import BaseModel

from domain.data_location import DataAccount, DataLocationRefused, check_data_uri
from domain.policy import ModelPolicy
from orchestrator.messages import InvalidMessage
from retrain.commands import DataLanded, RetrainRequested


def checked_data(command: BaseModel, policy: ModelPolicy, account: DataAccount | None) -> BaseModel:
    """`command` with its data URIs normalized; InvalidMessage naming the field if one is
    refused. Other commands, and a Ports without a data account (built by hand), pass."""
    if account is None:
        return command
    if isinstance(command, RetrainRequested) and command.data_uri is not None:
        try:
            uri = check_data_uri(command.data_uri, policy, account)
        except DataLocationRefused as exc:
            raise InvalidMessage(f"data_uri: {exc.reason}") from exc
        return command.model_copy(update={"data_uri": uri})
    if isinstance(command, DataLanded):
        items = []
        for index, item in enumerate(command.items):
            try:
                uri = check_data_uri(item.uri, policy, account)
            except DataLocationRefused as exc:
                raise InvalidMessage(f"items.{index}.uri: {exc.reason}") from exc
            items.append(item.model_copy(update={"uri": uri}))
        return command.model_copy(update={"items": items})
    return command
