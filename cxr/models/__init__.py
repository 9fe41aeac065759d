"""Models: the text tower (text/), the vision tower, adapters, optimiser groups and the LightningModules."""
