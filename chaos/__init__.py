"""Fault-injection runs (`make chaos` = `python -m chaos`): see chaos/scenarios.py and docs/reliability.md."""
