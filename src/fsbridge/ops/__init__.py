"""Operator-facing surface: health and readiness, the JSON ops API, request logging."""
