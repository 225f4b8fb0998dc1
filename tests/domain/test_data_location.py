"""Where training data may come from (domain/data_location.py): the pure check every entry
applies, and the redaction of what is stored or logged of a URI."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.data_location import (
    DataAccount,
    DataLocationRefused,
    check_data_uri,
    locate_data_uri,
    redact_body,
    redact_text,
    redact_uri,
)
from domain.policy import parse_policy
from tests.harness import policy_yaml

POLICY = parse_policy(policy_yaml("churn"))  # data: training-data/churn/
AZURE = DataAccount("https://acct.blob.core.windows.net")
AZURITE = DataAccount("http://127.0.0.1:10000/devstoreaccount1")
GOOD = "https://acct.blob.core.windows.net/training-data/churn/2026-11-22.csv"
TOKEN = "not-a-real-sas-signature"  # hyphens: the repository's secret scan passes it
SAS = f"sv=2024-08-04&se=2030-01-01&sr=b&sp=r&sig={TOKEN}%3D%3D"

REFUSED = {
    "file://": ("file:///data/churn/x.csv", "ALLOW_LOCAL_DATA_PATHS"),
    "bare path": ("/data/training-data/churn/x.csv", "ALLOW_LOCAL_DATA_PATHS"),
    "relative path": ("training-data/churn/x.csv", "ALLOW_LOCAL_DATA_PATHS"),
    "windows path": ("C:\\data\\churn\\x.csv", "ALLOW_LOCAL_DATA_PATHS"),
    "other account": (
        "https://evil.blob.core.windows.net/training-data/churn/x.csv",
        "not the data account",
    ),
    "look-alike host": (
        "https://acct.blob.core.windows.net.evil.com/training-data/churn/x.csv",
        "not the data account",
    ),
    "other container": ("https://acct.blob.core.windows.net/other/churn/x.csv", "container"),
    "outside prefix": ("https://acct.blob.core.windows.net/training-data/fraud/x.csv", "prefix"),
    "the container itself": ("https://acct.blob.core.windows.net/training-data/", "prefix"),
    "dot-dot": ("https://acct.blob.core.windows.net/training-data/churn/../fraud/x.csv", "'..'"),
    "dot": ("https://acct.blob.core.windows.net/training-data/churn/./x.csv", "'.'"),
    "encoded dot-dot": (
        "https://acct.blob.core.windows.net/training-data/churn/%2e%2e/fraud/x.csv",
        "'..'",
    ),
    "upper-case encoded dot-dot": (
        "https://acct.blob.core.windows.net/training-data/churn/%2E%2E/fraud/x.csv",
        "'..'",
    ),
    "double-encoded dot-dot": (
        "https://acct.blob.core.windows.net/training-data/churn/%252e%252e/x.csv",
        "'..'",
    ),
    "backslash": ("https://acct.blob.core.windows.net/training-data/churn\\..\\x.csv", "backslash"),
    "encoded backslash": (
        "https://acct.blob.core.windows.net/training-data/churn/%5c..%5cx.csv",
        "backslash",
    ),
    "encoded slash hiding dot-dot": (
        "https://acct.blob.core.windows.net/training-data/churn%2F..%2F..%2Fsecrets%2Fkey.csv",
        "encoded '/'",
    ),
    "encoded slash in the container": (
        "https://acct.blob.core.windows.net/training-data%2Fchurn%2F..%2F..%2Fother%2Fx.csv",
        "encoded '/'",
    ),
    "double-encoded slash": (
        "https://acct.blob.core.windows.net/training-data/churn/a%252F..%252Fx.csv",
        "encoded '/'",
    ),
    "SAS token": (f"{GOOD}?{SAS}", "SAS token"),
    "other query": (f"{GOOD}?versionid=1", "query string"),
    "empty query": (f"{GOOD}?", "query string"),
    "http in Azure": (
        "http://acct.blob.core.windows.net/training-data/churn/x.csv",
        "https only",
    ),
    "fragment": (f"{GOOD}#part", "fragment"),
    "userinfo": (
        "https://user:secret@acct.blob.core.windows.net/training-data/churn/x.csv",
        "user information",
    ),
    "port": ("https://acct.blob.core.windows.net:443/training-data/churn/x.csv", "port"),
    "other scheme": ("abfss://training-data@acct.dfs.core.windows.net/churn/x.csv", "scheme"),
    "space": ("https://acct.blob.core.windows.net/training-data/churn/a b.csv", "ASCII"),
    "newline": ("https://acct.blob.core.windows.net/training-data/churn/a\n.csv", "ASCII"),
    "encoded control": (
        "https://acct.blob.core.windows.net/training-data/churn/%00.csv",
        "control",
    ),
    "empty segment": ("https://acct.blob.core.windows.net/training-data//churn/x.csv", "'//'"),
    "empty": ("", "empty"),
}


@pytest.mark.parametrize(("uri", "says"), REFUSED.values(), ids=REFUSED.keys())
def test_a_uri_outside_the_policy_is_refused_saying_why(uri: str, says: str) -> None:
    with pytest.raises(DataLocationRefused) as refused:
        check_data_uri(uri, POLICY, AZURE)
    assert says in refused.value.reason
    assert "secret" not in refused.value.reason and TOKEN not in refused.value.reason


def test_the_right_https_blob_url_is_accepted() -> None:
    assert check_data_uri(GOOD, POLICY, AZURE) == GOOD
    assert check_data_uri(GOOD, POLICY, "https://acct.blob.core.windows.net/") == GOOD
    # A folder under the prefix, an encoded blob name, scheme and host in any case.
    folder = "https://acct.blob.core.windows.net/training-data/churn/2026/"
    assert check_data_uri(folder, POLICY, AZURE) == folder
    spaced = "HTTPS://ACCT.Blob.Core.Windows.Net/training-data/churn/a%20b.csv"
    assert check_data_uri(spaced, POLICY, AZURE) == (
        "https://acct.blob.core.windows.net/training-data/churn/a%20b.csv"
    )
    blob = locate_data_uri(spaced, POLICY, AZURE)
    assert (blob.container, blob.path) == ("training-data", "churn/a b.csv")


def test_locally_only_the_configured_azurite_endpoint_is_accepted() -> None:
    local = "http://127.0.0.1:10000/devstoreaccount1/training-data/churn/x.csv"
    assert check_data_uri(local, POLICY, AZURITE) == local
    for other in (
        "http://127.0.0.1:10001/devstoreaccount1/training-data/churn/x.csv",  # another port
        "http://localhost:10000/devstoreaccount1/training-data/churn/x.csv",  # another host
        "https://127.0.0.1:10000/devstoreaccount1/training-data/churn/x.csv",  # another scheme
        "http://127.0.0.1:10000/otheraccount/training-data/churn/x.csv",  # another account
        "http://127.0.0.1:10000/training-data/churn/x.csv",  # no account
    ):
        with pytest.raises(DataLocationRefused):
            check_data_uri(other, POLICY, AZURITE)
    # The Azure data account's URLs are not the emulator's, and the reverse.
    with pytest.raises(DataLocationRefused):
        check_data_uri(GOOD, POLICY, AZURITE)
    with pytest.raises(DataLocationRefused):
        check_data_uri(local, POLICY, AZURE)


def test_local_paths_only_with_the_development_setting() -> None:
    development = DataAccount(AZURITE.blob_endpoint, allow_local_paths=True)
    for path in ("file:///tmp/data/x.csv", "/tmp/data/x.csv", "data/x.csv"):
        with pytest.raises(DataLocationRefused, match="ALLOW_LOCAL_DATA_PATHS"):
            check_data_uri(path, POLICY, AZURITE)
        assert check_data_uri(path, POLICY, development) == path
    # The setting opens local paths, not other accounts, and not SAS tokens.
    with pytest.raises(DataLocationRefused):
        check_data_uri(GOOD, POLICY, development)
    with pytest.raises(DataLocationRefused, match="SAS"):
        check_data_uri(
            f"{AZURITE.blob_endpoint}/training-data/churn/x.csv?{SAS}", POLICY, development
        )


# --------------------------------------------------------------------------- properties

# No deadline: under a loaded test run the first examples can be slow, and speed is not the point.
PROPERTIES = settings(deadline=None)

blob_names = st.lists(
    st.text(alphabet=string.ascii_letters + string.digits + "-_.", min_size=1, max_size=12).filter(
        lambda segment: segment not in (".", "..")
    ),
    min_size=1,
    max_size=4,
).map("/".join)
dot_segments = st.sampled_from(
    [".", "..", "%2e", "%2E", "%2e%2e", "%2E%2e", ".%2e", "%2e.", "%252e%252e", "%252E"]
)


@PROPERTIES
@given(name=blob_names)
def test_every_blob_under_the_prefix_is_accepted_as_it_is(name: str) -> None:
    uri = f"https://acct.blob.core.windows.net/training-data/churn/{name}"
    assert check_data_uri(uri, POLICY, AZURE) == uri
    assert redact_uri(uri) == uri


@PROPERTIES
@given(name=blob_names, dots=dot_segments, at=st.integers(min_value=0, max_value=4))
def test_a_dot_segment_anywhere_is_refused(name: str, dots: str, at: int) -> None:
    segments = ["training-data", "churn", *name.split("/")]
    segments.insert(min(at, len(segments)), dots)
    with pytest.raises(DataLocationRefused):
        check_data_uri(f"https://acct.blob.core.windows.net/{'/'.join(segments)}", POLICY, AZURE)


@PROPERTIES
@given(
    name=blob_names,
    token=st.text(alphabet=string.ascii_letters + string.digits + "%+/=", min_size=8),
)
def test_a_sas_token_is_refused_and_never_repeated(name: str, token: str) -> None:
    uri = f"https://acct.blob.core.windows.net/training-data/churn/{name}?sv=1&sig={token}"
    with pytest.raises(DataLocationRefused, match="SAS token") as refused:
        check_data_uri(uri, POLICY, AZURE)
    assert token not in refused.value.reason
    assert redact_uri(uri) == uri.split("?")[0]


@PROPERTIES
@given(host=st.from_regex(r"[a-z0-9]{3,24}\.blob\.core\.windows\.net", fullmatch=True))
def test_any_other_account_is_refused(host: str) -> None:
    uri = f"https://{host}/training-data/churn/x.csv"
    if host == "acct.blob.core.windows.net":
        assert check_data_uri(uri, POLICY, AZURE) == uri
    else:
        with pytest.raises(DataLocationRefused, match="not the data account"):
            check_data_uri(uri, POLICY, AZURE)


# --------------------------------------------------------------------------- redaction


def test_redaction_strips_queries_fragments_and_user_information() -> None:
    assert redact_uri(f"{GOOD}?{SAS}") == GOOD
    assert redact_uri(f"{GOOD}#x") == GOOD
    assert redact_uri("https://u:p@acct.blob.core.windows.net/c/x") == (
        "https://acct.blob.core.windows.net/c/x"
    )
    assert redact_uri("/local/path") == "/local/path"
    text = redact_text(f"refused {GOOD}?{SAS} and a stray sig=abc&x=1")
    assert "sig=" not in text and TOKEN not in text and "abc" not in text
    assert GOOD in text


@PROPERTIES
@given(uri=st.just(f"{GOOD}?{SAS}"), escaped=st.booleans(), pretty=st.booleans())
def test_a_body_keeps_no_sas_token_however_it_is_written(
    uri: str, escaped: bool, pretty: bool
) -> None:
    document = {"model": "churn", "data_uri": uri, "nested": [{"url": uri}]}
    text = json.dumps(document, indent=2 if pretty else None)
    if escaped:  # JSON may escape any character: '&' and '?' as \\u0026 and \\u003f
        text = text.replace("&", "\\u0026").replace("?", "\\u003f")
    redacted = redact_body(text)
    assert "sig=" not in redacted and TOKEN not in redacted
    assert json.loads(redacted)["data_uri"] == GOOD
    garbage = redact_body(f"not json: {uri} ({uri[:-5]}")  # and a truncated one
    assert "sig=" not in garbage and TOKEN not in garbage
