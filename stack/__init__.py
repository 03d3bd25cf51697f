"""The full stack of compose.yaml, run here as supervised processes (`lab stack`)."""
