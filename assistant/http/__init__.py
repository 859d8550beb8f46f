"""The HTTP edge: the composition root (app), the OpenAI-compatible and admin routes, identity,
rate limits and Prometheus metrics. Only this package raises HTTP errors."""
