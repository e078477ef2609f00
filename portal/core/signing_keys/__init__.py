"""signing_keys."""
