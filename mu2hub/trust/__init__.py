"""What keeps strangers' files harmless: escaping per output sink (`text`), one writer per run directory (`claim`)."""
