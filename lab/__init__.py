"""The llmrec lab: experiments, the new-item offset tuner, head tuning and the analyses report.

It stands beside the product: it imports llmrec_core and is never imported by it (tests/code/test_layers.py)."""
