"""The local Functions host: runs any `azure.functions.FunctionApp` without Core Tools.

`dev_host.DevHost` is the host; `main` is `python -m devhost`. See docs/devhost.md.
"""
