"""Train states and pure, jitted training steps."""
