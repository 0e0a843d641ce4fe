"""The published format (docs/FORMAT.md): strict JSON, the schema, config/task files, component bytes and ids, lineage."""
