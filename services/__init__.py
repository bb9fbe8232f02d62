"""The five Trading Tools services; each runs as `python -m services.<name>`."""
