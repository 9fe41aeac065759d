"""Writers of the synthetic world in the real datasets' on-disk layouts (one module per layout)."""
