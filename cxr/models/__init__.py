"""Models: text and vision towers, pooling, and the LightningModules."""
