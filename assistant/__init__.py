"""Serving path: request -> retrieve -> prompt -> route -> generate -> log."""
