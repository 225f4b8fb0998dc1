"""Running the app on one machine, in three rooms:

- `devhost/host/`: the local Functions host (`python -m devhost`, `make devhost`);
- `devhost/cli/`: what a person does, locally or against Azure (`python -m devhost.cli`);
- `devhost/demo/`: the whole loop with no Azure subscription (`python -m devhost.demo`,
  `make demo`).
"""
