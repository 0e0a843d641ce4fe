"""Where a system's files live and how they are fetched: stores, the assets cache, request deadlines, repo summaries,
pull requests that only add files."""
