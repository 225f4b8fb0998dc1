"""Download a data URI into a local folder: local paths, file:// URIs and Azure Blob URLs.

Blob URLs are `https://<account>.blob.core.windows.net/<container>/<path>` or, for Azurite
and other path-style endpoints, `http://127.0.0.1:<port>/<account>/<container>/<path>`.
A URL that names one blob downloads that blob; otherwise it is a prefix ("folder") and
every blob under `<path>/` is downloaded, keeping the relative names.

`BlobFetcher(connection_string=... | blob_service_client=... | credential=...)` is the
callable the local runner takes as `fetch`; `fetch(uri, dest_dir)` is the same without a
storage account (local paths, or blob URLs with DefaultAzureCredential).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient

Fetch = Callable[[str, Path], list[Path]]


class FetchError(RuntimeError):
    """The URI cannot be fetched (missing, unsupported scheme, storage error)."""


class BlobFetcher:
    """Fetch local paths and blob URLs; blob URLs go through one BlobServiceClient.

    Give `blob_service_client`, or a `connection_string` (e.g. Azurite's), or nothing
    (a client per account URL with `credential`, by default DefaultAzureCredential).
    """

    def __init__(
        self,
        *,
        connection_string: str | None = None,
        blob_service_client: BlobServiceClient | None = None,
        credential: Any = None,
    ) -> None:
        self._connection_string = connection_string
        self._client = blob_service_client
        self._credential = credential
        self._clients: dict[str, BlobServiceClient] = {}

    def __call__(
        self, uri: str, dest_dir: Path, *, include: Callable[[str], bool] | None = None
    ) -> list[Path]:
        """Fetch `uri` into `dest_dir`. `include` (blob folders only) picks the blobs by their
        path below the folder, so only those are downloaded; a folder with blobs none of which
        is picked is an empty answer, a folder with no blobs at all an error."""
        dest_dir = Path(dest_dir)
        dest_dir.mkdir(parents=True, exist_ok=True)
        parsed = urlparse(uri)
        if parsed.scheme in ("http", "https"):
            return self._fetch_blob(uri, dest_dir, include)
        if parsed.scheme == "file":
            return _copy_local(Path(url2pathname(unquote(parsed.path))), dest_dir)
        if parsed.scheme == "" or (len(parsed.scheme) == 1 and uri[1:3] in (":\\", ":/")):
            return _copy_local(Path(uri), dest_dir)
        raise FetchError(
            f"cannot fetch {uri!r}: scheme {parsed.scheme!r} is not supported locally "
            "(use a local path, file://, or an http(s) blob URL)"
        )

    # -- blobs -------------------------------------------------------------------------

    def _service_for(self, uri: str) -> tuple[BlobServiceClient, str, str]:
        """The service client for `uri`, and the container and blob path it names."""
        if self._client is None and self._connection_string:
            from azure.storage.blob import BlobServiceClient

            self._client = BlobServiceClient.from_connection_string(self._connection_string)
        if self._client is not None:
            base = self._client.url.rstrip("/") + "/"
            if not uri.startswith(base):
                raise FetchError(
                    f"cannot fetch {uri!r}: not in the configured storage account {base}"
                )
            return (self._client, *_split_container(uri[len(base) :], uri))
        parsed = urlparse(uri)
        path = parsed.path.lstrip("/")
        account_url = f"{parsed.scheme}://{parsed.netloc}"
        if ".blob." not in parsed.netloc:  # path-style (Azurite): /<account>/<container>/...
            account, _, path = path.partition("/")
            account_url = f"{account_url}/{account}"
        client = self._clients.get(account_url)
        if client is None:
            from azure.storage.blob import BlobServiceClient

            credential = self._credential
            if credential is None:
                from adapters.azure_credential import azure_credential

                credential = azure_credential()
            client = BlobServiceClient(account_url=account_url, credential=credential)
            self._clients[account_url] = client
        return (client, *_split_container(path, uri))

    def _fetch_blob(
        self, uri: str, dest_dir: Path, include: Callable[[str], bool] | None = None
    ) -> list[Path]:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        service, container, blob_path = self._service_for(uri)
        container_client = service.get_container_client(container)
        try:
            if blob_path and not blob_path.endswith("/") and include is None:
                blob = container_client.get_blob_client(blob_path)
                try:
                    target = dest_dir / Path(blob_path).name
                    with target.open("wb") as handle:
                        blob.download_blob().readinto(handle)
                    return [target]
                except ResourceNotFoundError:
                    target.unlink(missing_ok=True)  # not a blob: try it as a folder
            prefix = blob_path.rstrip("/") + "/" if blob_path else ""
            written: list[Path] = []
            listed = False
            for item in container_client.list_blobs(name_starts_with=prefix or None):
                relative = item.name[len(prefix) :]
                if not relative or relative.endswith("/"):
                    continue
                listed = True
                if include is not None and not include(relative):
                    continue
                target = _safe_join(dest_dir, relative)
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("wb") as handle:
                    container_client.download_blob(item.name).readinto(handle)
                written.append(target)
        except ResourceNotFoundError as exc:
            raise FetchError(f"cannot fetch {uri!r}: {exc.reason or 'not found'}") from exc
        except AzureError as exc:
            raise FetchError(f"cannot fetch {uri!r}: {exc}") from exc
        if not listed:
            raise FetchError(f"cannot fetch {uri!r}: no blob or folder of that name")
        return written


def fetch(uri: str, dest_dir: Path) -> list[Path]:
    """Fetch without a configured storage account (local paths; blob URLs by identity)."""
    return BlobFetcher()(uri, dest_dir)


def _split_container(path: str, uri: str) -> tuple[str, str]:
    container, _, blob_path = unquote(path).partition("/")
    if not container:
        raise FetchError(f"cannot fetch {uri!r}: no container in the URL")
    return container, blob_path


def _safe_join(root: Path, relative: str) -> Path:
    target = (root / relative).resolve()
    if not target.is_relative_to(root.resolve()):
        raise FetchError(f"refusing to write {relative!r} outside {root}")
    return target


def _copy_local(source: Path, dest_dir: Path) -> list[Path]:
    if source.is_file():
        target = dest_dir / source.name
        shutil.copy2(source, target)
        return [target]
    if source.is_dir():
        written = []
        for file in sorted(p for p in source.rglob("*") if p.is_file()):
            target = dest_dir / file.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, target)
            written.append(target)
        if not written:
            raise FetchError(f"cannot fetch {str(source)!r}: the folder is empty")
        return written
    raise FetchError(f"cannot fetch {str(source)!r}: no such file or folder")
