"""One construct per concern; each takes keyword-only properties and exposes its resources as attributes."""
