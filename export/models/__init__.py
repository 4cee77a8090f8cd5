"""The model families (one module each) and the registry that lists them."""
