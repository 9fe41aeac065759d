"""Pure loss functions (no logging inside)."""
