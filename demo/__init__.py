"""The README's demo (`python -m demo`): moto and a real Synapse from servers/, media uploaded
and served back from the bucket (run.py)."""
