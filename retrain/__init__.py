"""The retrain rules, pure: commands, the per-model tracker, and `decide` (see decide.py)."""
