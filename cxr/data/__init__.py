"""Data: sources, images, transforms, validation, the synthetic CXR world, datasets and DataModules."""
