"""The local online endpoints: registered MLflow models served with a weighted, keyed split.

The local counterpart of Azure ML's managed online endpoints (see docs/endpoint.md): one
server, any number of endpoints addressed by name (``/{endpoint}/score``), each with its own
deployments, traffic and request log. `adapters.local_endpoint.LocalEndpoint` is the client of
one of them; `start_local_endpoint` runs the server.
"""

from endpoint_server.routing import bucket, mirror_target, route
from endpoint_server.server import LocalEndpointHandle, start_local_endpoint

__all__ = ["LocalEndpointHandle", "bucket", "mirror_target", "route", "start_local_endpoint"]
