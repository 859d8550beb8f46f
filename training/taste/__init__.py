"""The users' taste: a reward model fitted on their votes, and best-of-n candidates scored by it."""
