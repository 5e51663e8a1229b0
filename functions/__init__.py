"""Lambda functions: thin edges over the core services (STYLE.md 1)."""
