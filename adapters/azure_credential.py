"""The one place the app builds its Azure credential.

Every Azure adapter (storage, Service Bus, Event Hubs, Azure ML, blob fetches) and devhost's
real receivers take their credential from here, so how the app authenticates (managed
identity in Azure, `az login` on a laptop) is decided once. The import stays inside the
function: azure-identity is not loaded by `import function_app`.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

_lock = threading.Lock()
_credential: TokenCredential | None = None


def azure_credential() -> TokenCredential:
    """The process's DefaultAzureCredential, built on first use and shared (it caches tokens)."""
    global _credential
    with _lock:
        if _credential is None:
            from azure.identity import DefaultAzureCredential

            _credential = DefaultAzureCredential()
        return _credential
