"""Side-by-side benchmarks against the Hugging Face example recipes (run as ``python -m bench.<name>``)."""
