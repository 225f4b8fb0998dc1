"""The local online endpoint: serves registered MLflow models with a weighted, keyed split.

The local counterpart of an Azure ML managed online endpoint (see docs/endpoint.md).
`adapters.local_endpoint.LocalEndpoint` is its client; `start_local_endpoint` runs it.
"""

from endpoint_server.routing import bucket, mirror_target, route
from endpoint_server.server import LocalEndpointHandle, start_local_endpoint

__all__ = ["LocalEndpointHandle", "bucket", "mirror_target", "route", "start_local_endpoint"]
