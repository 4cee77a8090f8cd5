"""Training and export: data -> models -> training -> ONNX graphs -> a published model bundle."""
