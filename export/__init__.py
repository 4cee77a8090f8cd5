"""Training of the three rating models on MovieLens 100K and their export to ONNX bundles."""
