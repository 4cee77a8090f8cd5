"""The ONNX stage: writing graphs, and checking them against torch with the scoring engine."""
