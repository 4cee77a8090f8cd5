"""Batch scoring of exported ONNX rating models into Parquet tables (onnxruntime only, no torch)."""
