"""The cycle: curate -> train -> validate -> canary as recorded stages, the subprocess runner,
the scheduler, and the operator controls the console and admin API call."""
