"""The CLI: what a person does with the app, locally or against Azure (`python -m devhost.cli`).

- `commands`: what each subcommand does (builds envelopes, sends them, uploads data, reads
  state);
- `render`: how results and errors are shown;
- `main`: the entry point (argparse, settings, exit codes).

See docs/cli.md.
"""
