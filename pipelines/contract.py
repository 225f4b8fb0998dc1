"""What a training pipeline file must declare, and how the orchestrator passes it data.

The pipeline YAML in pipelines/azureml/ and both training backends (Azure ML jobs and the
local runner) agree on these names. Nothing heavy is imported here.
"""

from __future__ import annotations

# The pipeline inputs every pipeline file must declare (the data input's name comes from
# PipelineSettings.data_input).
MODEL_NAME_INPUT = "model_name"
CHAMPION_INPUT = "champion_version"
RUN_ID_INPUT = "run_id"
DATA_URIS_INPUT = "data_uris"
NO_CHAMPION = "none"  # the champion_version value that means "no production model yet"

# The step run that registers the model sets these tags (MLflow run tags, which Azure ML
# shows as job tags), and writes the same values to registration.json in the pipeline
# output `registration`.
REGISTERED_MODEL_TAG = "registered_model_name"
REGISTERED_VERSION_TAG = "registered_model_version"
REGISTRATION_OUTPUT = "registration"


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
