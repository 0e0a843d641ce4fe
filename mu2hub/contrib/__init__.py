"""Contributing back: adding a task to a published system, and validating a contribution's pull request."""
