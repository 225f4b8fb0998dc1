"""Where training data may come from: blobs of the data account, under the model's prefix.

Pure: no I/O. `check_data_uri(uri, policy, data_account)` is the one check every entry applies
(POST /api/retrain, data-ready and Event Grid events, the blob trigger, and the service layer
for RetrainRequested and DataLanded): it returns the normalized URI or raises
`DataLocationRefused(reason)`. The reason never repeats a query string or user information.

A URI is accepted when it is

- `https://<the data account's blob host>/<container>/<prefix>...` (no port), or, locally,
  on exactly the data account's development endpoint (Azurite's
  `http://127.0.0.1:<port>/devstoreaccount1/<container>/<prefix>...`);
- in the model's data container, under its data prefix (`policy.data`);
- free of `.` and `..` segments (also percent-encoded), backslashes, control characters,
  user information, a query string (a SAS token: the app reads the data with its own
  identity) and a fragment.

Local paths (`file://...` and bare paths) are accepted only when the data account allows them
(`ALLOW_LOCAL_DATA_PATHS`, for development only).

`redact_uri`, `redact_text` and `redact_body` strip query strings (SAS tokens) from what is
stored or logged.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, unquote, urlsplit

if TYPE_CHECKING:  # the check is cheap to import: no pydantic (triggers use it at once)
    from domain.policy import ModelPolicy

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_DOT_SEGMENTS = frozenset({".", ".."})
# A URL's query (and fragment) in free text: up to the end of the URL (a quote, a space, a
# bracket or a backslash, as in JSON text). The scheme is bounded (real ones are short): an
# unbounded one made a long run of letters quadratic (a 160 KB body took 45 s to redact).
_URL_QUERY = re.compile(r"""([A-Za-z][A-Za-z0-9+.-]{0,31}://[^\s"'<>\\?#]*)[?#][^\s"'<>\\]*""")
# A SAS signature anywhere else (a query without its URL, a header value).
_SIGNATURE = re.compile(r"""(?i)sig=[^\s"'<>\\&]*""")


class DataLocationRefused(ValueError):
    """A data URI the policy does not allow; `reason` says why (and never echoes a token)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class DataAccount:
    """The account data may come from: its blob endpoint, as the settings derive it
    (`Settings.data_blob_endpoint`), e.g. `https://acct.blob.core.windows.net` or Azurite's
    `http://127.0.0.1:10000/devstoreaccount1`; and whether local paths are allowed
    (`ALLOW_LOCAL_DATA_PATHS`, development only)."""

    blob_endpoint: str
    allow_local_paths: bool = False

    @property
    def _parts(self) -> SplitResult:
        return urlsplit(self.blob_endpoint.strip().rstrip("/"))

    @property
    def scheme(self) -> str:
        return self._parts.scheme.lower()

    @property
    def netloc(self) -> str:
        return self._parts.netloc.lower()

    @property
    def base_path(self) -> str:
        """The path of a path-style endpoint (Azurite: `/devstoreaccount1`), else ''."""
        return self._parts.path.rstrip("/")

    @property
    def is_development(self) -> bool:
        """A plain-http endpoint on this machine: the storage emulator."""
        return self.scheme == "http" and (self._parts.hostname or "") in _LOOPBACK


@dataclass(frozen=True)
class DataBlob:
    """An accepted data URI: normalized, and the container and blob path it names (decoded)."""

    uri: str
    container: str
    path: str  # the blob path (or folder) inside the container; '' for local paths

    @property
    def name(self) -> str:
        """`<container>/<path>`, as the blob trigger and Event Grid's subject name a blob."""
        return f"{self.container}/{self.path}"


def check_data_uri(uri: str, policy: ModelPolicy, data_account: DataAccount | str) -> str:
    """The normalized data URI, or DataLocationRefused naming why (see the module)."""
    return locate_data_uri(uri, policy, data_account).uri


def locate_data_uri(uri: str, policy: ModelPolicy, data_account: DataAccount | str) -> DataBlob:
    """`check_data_uri`, also giving the container and blob path the URI names."""
    account = DataAccount(data_account) if isinstance(data_account, str) else data_account
    if not isinstance(uri, str) or not uri:
        raise DataLocationRefused("is empty")
    if any(not "\x21" <= char <= "\x7e" for char in uri):
        raise DataLocationRefused(
            "may hold printable ASCII only: no spaces, control or non-ASCII characters "
            "(percent-encode them)"
        )
    scheme_match = _SCHEME.match(uri)
    scheme = scheme_match.group(1).lower() if scheme_match else ""
    if scheme == "file" or not scheme_match or _WINDOWS_DRIVE.match(uri):
        if account.allow_local_paths:
            return DataBlob(uri=uri, container="", path="")
        raise DataLocationRefused(
            "local paths (file:// or a bare path) are accepted only when "
            "ALLOW_LOCAL_DATA_PATHS is on (development only); give an https URL of a blob "
            "in the data account"
        )
    if "?" in uri:
        query = uri.split("?", 1)[1].lower()
        if "sig=" in query or "sv=" in query:
            raise DataLocationRefused(
                "carries a SAS token (a query string): not accepted, and not stored; the app "
                "reads the data account with its own identity, so give the blob URL without "
                "its '?...'"
            )
        raise DataLocationRefused("has a query string: not accepted")
    if "#" in uri:
        raise DataLocationRefused("has a fragment ('#...'): not accepted")
    if "\\" in uri:
        raise DataLocationRefused("holds a backslash: not accepted")
    if scheme not in ("http", "https"):
        raise DataLocationRefused(
            f"scheme {scheme!r} is not accepted: data comes from https blob URLs of the "
            "data account"
        )
    parts = urlsplit(uri)
    if "@" in parts.netloc:
        raise DataLocationRefused("carries user information ('...@'): not accepted")
    _check_origin(parts, scheme, account)
    return _check_path(parts, scheme, policy, account)


def _check_origin(parts: SplitResult, scheme: str, account: DataAccount) -> None:
    expected = f"{account.scheme}://{account.netloc}"
    if account.is_development:
        expected += account.base_path
        if scheme != account.scheme or parts.netloc.lower() != account.netloc:
            raise DataLocationRefused(
                f"is not on the data account's development endpoint {expected}"
            )
        return
    if scheme != "https":
        raise DataLocationRefused(f"scheme {scheme!r} is not accepted: https only")
    host, colon, _ = parts.netloc.partition(":")
    if colon:
        raise DataLocationRefused("names a port: not accepted (the data account's https only)")
    if host.lower() != account.netloc:
        raise DataLocationRefused(
            f"host {host.lower()!r} is not the data account's blob endpoint ({expected})"
        )


def _check_path(
    parts: SplitResult, scheme: str, policy: ModelPolicy, account: DataAccount
) -> DataBlob:
    base = account.base_path
    if not parts.path.startswith(base + "/"):
        raise DataLocationRefused(f"is not in the data account ({base or '/'})")
    raw_segments = parts.path[len(base) + 1 :].split("/")
    for index, segment in enumerate(raw_segments):
        once = unquote(segment)
        if once in _DOT_SEGMENTS or unquote(once) in _DOT_SEGMENTS:
            raise DataLocationRefused("has a '.' or '..' segment (also percent-encoded)")
        if "\\" in once or "\\" in unquote(once):
            raise DataLocationRefused("holds a backslash (percent-encoded): not accepted")
        if "/" in once or "/" in unquote(once):
            # An encoded '/' would hide a '..' from the segment check and end up a real one
            # once a client decodes the path (other containers, other prefixes).
            raise DataLocationRefused("holds an encoded '/' (%2F): not accepted")
        if any(char < "\x20" or char == "\x7f" for char in once):
            raise DataLocationRefused("holds a control character (percent-encoded)")
        if not segment and index < len(raw_segments) - 1:
            raise DataLocationRefused("has an empty path segment ('//')")
    container, _, blob_path = unquote(parts.path[len(base) + 1 :]).partition("/")
    data = policy.data
    if container != data.container:
        raise DataLocationRefused(
            f"container {container!r} is not {policy.model}'s data container ({data.container!r})"
        )
    if not blob_path or not blob_path.startswith(data.prefix):
        raise DataLocationRefused(
            f"is outside {policy.model}'s data prefix ({data.container}/{data.prefix})"
        )
    uri = f"{scheme}://{parts.netloc.lower()}{parts.path}"
    return DataBlob(uri=uri, container=container, path=blob_path)


# --------------------------------------------------------------------------- redaction


def redact_uri(uri: str) -> str:
    """The URI without its query string, fragment and user information (a SAS token, a
    password): what may be stored or logged of a URI, accepted or not."""
    text = uri.split("?", 1)[0].split("#", 1)[0]
    scheme, separator, rest = text.partition("://")
    if separator:
        authority, slash, path = rest.partition("/")
        text = f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"
    return redact_text(text)


def redact_text(text: str) -> str:
    """Free text (a reason, a log line) with every URL's query string and fragment removed
    and any other `sig=` value blanked: no SAS token survives."""
    return _SIGNATURE.sub("sig-redacted", _URL_QUERY.sub(r"\1", text))


def redact_body(text: str) -> str:
    """A message body as `redact_text` leaves it. A JSON body is redacted value by value
    first (so an escaped `\\u0026sig=` is caught too) and written back only if that changed
    something; then the text itself."""
    try:
        document = json.loads(text)
        redacted = _redact_values(document)
    except (ValueError, RecursionError):  # not JSON, or nested past the recursion limit
        return redact_text(text)
    if redacted != document:
        text = json.dumps(redacted)
    return redact_text(text)


def _redact_values(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, list):
        return [_redact_values(item) for item in value]
    if isinstance(value, dict):
        return {redact_text(key): _redact_values(item) for key, item in value.items()}
    return value
