"""The run record: what a run writes (result.json, metrics.jsonl, param_groups.json) and how it is read back."""
