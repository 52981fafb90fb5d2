"""Training loops: build, restore, train, evaluate, checkpoint."""
