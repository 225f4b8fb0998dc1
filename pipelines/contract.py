"""What a training pipeline file must declare, and how the orchestrator passes it data.

The pipeline YAML in pipelines/azureml/ and both training backends (Azure ML jobs and the
local runner) agree on these names. Nothing heavy is imported here.
"""

from __future__ import annotations

from domain.policy import ALL_FEATURES

# The pipeline inputs every pipeline file must declare (the data input's name comes from
# PipelineSettings.data_input).
MODEL_NAME_INPUT = "model_name"
CHAMPION_INPUT = "champion_version"
RUN_ID_INPUT = "run_id"
DATA_URIS_INPUT = "data_uris"
NO_CHAMPION = "none"  # the champion_version value that means "no production model yet"
# The dataset's columns (the policy's data.label_column and data.feature_columns). A pipeline
# file that lacks these inputs can train only on the defaults: a `label` column, and every
# other column as a feature.
LABEL_COLUMN_INPUT = "label_column"
FEATURE_COLUMNS_INPUT = "feature_columns"
DEFAULT_LABEL_COLUMN = "label"
# Written beside the data by the local runner: {file path relative to the data input: its
# URI}, so the prepare step names a bad file as the user sent it (pipelines/components/common).
DATA_SOURCES_FILE = "_sources.json"

# The step run that registers the model sets these tags (MLflow run tags, which Azure ML
# shows as job tags), and writes the same values to registration.json in the pipeline
# output `registration`.
REGISTERED_MODEL_TAG = "registered_model_name"
REGISTERED_VERSION_TAG = "registered_model_version"
REGISTRATION_OUTPUT = "registration"


def feature_columns_text(columns: list[str] | None) -> str:
    """The feature columns as one pipeline input: comma-separated, or "*" for every column
    except the label (the policy refuses a comma in a column name, and "*" as one)."""
    return ",".join(columns) if columns else ALL_FEATURES


def column_inputs(
    label_column: str, feature_columns: list[str] | None, declared: set[str], pipeline: str
) -> dict[str, str]:
    """The column inputs to set on a pipeline that declares `declared`.

    A pipeline without them trains on the defaults only: asking it for another label column
    or for chosen features raises ValueError naming the pipeline and the input.
    """
    wanted = {
        LABEL_COLUMN_INPUT: (label_column, label_column != DEFAULT_LABEL_COLUMN),
        FEATURE_COLUMNS_INPUT: (feature_columns_text(feature_columns), bool(feature_columns)),
    }
    values: dict[str, str] = {}
    for name, (value, chosen) in wanted.items():
        if name in declared:
            values[name] = value
        elif chosen:
            raise ValueError(
                f"{pipeline}: the pipeline has no input {name!r}, so it cannot train with "
                f"{name} {value!r} (the policy's data.{name})"
            )
    return values


def data_uris_text(data_uris: list[str], limit: int = 4000) -> str:
    """The data URIs as one comma-separated string (a pipeline input and a tag value).

    Shortened to `limit` characters; quotes are percent-encoded so the value is safe inside
    the single quotes of a component's command line.
    """
    data_uris = [uri.replace("'", "%27").replace(",", "%2C") for uri in data_uris]
    text = ",".join(data_uris)
    if len(text) <= limit:
        return text
    kept: list[str] = []
    used = 0
    for uri in data_uris:
        if used + len(uri) + 1 > limit - 40:
            break
        kept.append(uri)
        used += len(uri) + 1
    return ",".join([*kept, f"...and-{len(data_uris) - len(kept)}-more"])
