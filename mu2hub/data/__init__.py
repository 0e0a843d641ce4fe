"""Tasks and their input pipelines: the registry, built-in data, Hugging Face datasets, preprocessing."""
