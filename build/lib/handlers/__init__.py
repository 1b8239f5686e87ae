"""What to say: rules, intents, FAQ and typed answers. Pure functions and values, no platform I/O."""
