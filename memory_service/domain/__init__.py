"""Pure rules and values: validation, ranking, feedback, page tokens. No I/O."""
