"""Small helpers every layer may use: atomic writes, file locks, optional extras, text escaping, tables, progress bars."""
