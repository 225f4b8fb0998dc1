"""blob_fetch: local paths and file:// URIs, and blob URLs against a real Azurite."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.blob_fetch import BlobFetcher, FetchError, fetch


def test_fetches_a_local_file_a_folder_and_a_file_uri(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "2026").mkdir(parents=True)
    (source / "a.csv").write_text("x,label\n1,0\n")
    (source / "2026" / "b.csv").write_text("x,label\n2,1\n")

    [one] = fetch(str(source / "a.csv"), tmp_path / "one")
    assert one.read_text() == "x,label\n1,0\n"
    every = fetch(str(source), tmp_path / "all")
    assert sorted(p.relative_to(tmp_path / "all").as_posix() for p in every) == [
        "2026/b.csv",
        "a.csv",
    ]
    [by_uri] = fetch((source / "2026" / "b.csv").as_uri(), tmp_path / "uri")
    assert by_uri.read_text() == "x,label\n2,1\n"


def test_missing_and_unsupported_uris_fail(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="no such file"):
        fetch(str(tmp_path / "nope.csv"), tmp_path / "out")
    with pytest.raises(FetchError, match="not supported"):
        fetch("azureml://datastores/x/paths/y", tmp_path / "out")


@pytest.mark.azurite
def test_fetches_blobs_and_blob_folders_from_azurite(
    azurite: object, unique_name: str, tmp_path: Path
) -> None:
    from azure.storage.blob import BlobServiceClient

    connection_string = azurite.connection_string  # type: ignore[attr-defined]
    service = BlobServiceClient.from_connection_string(connection_string)
    container = service.create_container(unique_name)
    container.upload_blob("churn/2026/01/a.csv", b"x,label\n1,0\n")
    container.upload_blob("churn/2026/02/b.csv", b"x,label\n2,1\n")
    container.upload_blob("churn/other.csv", b"x,label\n3,0\n")
    base = f"{azurite.blob_endpoint.rstrip('/')}/{unique_name}"  # type: ignore[attr-defined]
    fetcher = BlobFetcher(connection_string=connection_string)

    folder = fetcher(f"{base}/churn/2026/", tmp_path / "folder")
    assert sorted(p.relative_to(tmp_path / "folder").as_posix() for p in folder) == [
        "01/a.csv",
        "02/b.csv",
    ]
    no_slash = fetcher(f"{base}/churn/2026", tmp_path / "no-slash")
    assert len(no_slash) == 2
    [single] = fetcher(f"{base}/churn/other.csv", tmp_path / "single")
    assert single.read_bytes() == b"x,label\n3,0\n"
    with pytest.raises(FetchError, match="no blob or folder"):
        fetcher(f"{base}/churn/missing.csv", tmp_path / "missing")
    with pytest.raises(FetchError, match="not in the configured storage account"):
        fetcher("https://elsewhere.blob.core.windows.net/c/a.csv", tmp_path / "x")
    # Or with a client the caller built.
    by_url = BlobFetcher(blob_service_client=service)(f"{base}/churn/2026/01/a.csv", tmp_path / "c")
    assert [p.name for p in by_url] == ["a.csv"]


@pytest.mark.azurite
def test_a_folder_fetch_can_pick_its_blobs(
    azurite: object, unique_name: str, tmp_path: Path
) -> None:
    from azure.storage.blob import BlobServiceClient

    connection_string = azurite.connection_string  # type: ignore[attr-defined]
    container = BlobServiceClient.from_connection_string(connection_string).create_container(
        unique_name
    )
    for hour in ("09", "10", "11"):
        container.upload_blob(f"mdc/dep/model_inputs/2026/03/02/{hour}/a.jsonl", b"{}\n")
    base = f"{azurite.blob_endpoint.rstrip('/')}/{unique_name}"  # type: ignore[attr-defined]
    fetcher = BlobFetcher(connection_string=connection_string)

    picked = fetcher(f"{base}/mdc/", tmp_path / "picked", include=lambda path: "/10/" in path)
    assert [p.relative_to(tmp_path / "picked").as_posix() for p in picked] == [
        "dep/model_inputs/2026/03/02/10/a.jsonl"
    ]
    assert fetcher(f"{base}/mdc/", tmp_path / "none", include=lambda path: False) == []
    with pytest.raises(FetchError, match="no blob or folder"):  # nothing there at all
        fetcher(f"{base}/elsewhere/", tmp_path / "x", include=lambda path: True)
