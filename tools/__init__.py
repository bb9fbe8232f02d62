"""Developer tooling: code generation, the local stack supervisor, the demo."""
