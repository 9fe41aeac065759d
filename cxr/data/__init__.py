"""Data: records, sources, images, transforms, the synthetic CXR world and DataModules."""
