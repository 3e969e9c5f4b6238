"""Model adapters for mmeb, one module per family, found through mmeb.registry."""
