"""Inference workers: load models, build input tuples, run onnxruntime, explain. Never imports torch."""
