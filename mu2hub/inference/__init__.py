"""Using a published system: the loaded task, many tasks at once, evaluation, probes, and the two caches a
running model uses (frozen prefixes, compiled steps)."""
