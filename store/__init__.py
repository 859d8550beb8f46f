"""The only package that writes SQL: schema, logs, registry, datasets, rollouts, cycles, queries."""
