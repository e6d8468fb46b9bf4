"""Training side of the fraud model (the `train` extra): the heterogeneous GNN, the tabular baseline, the ONNX export
and the evaluation report. Nothing here is imported by the serving path; only `trainer.snapshot` and
`trainer.embed` are torch-free (numpy + onnxruntime), so an embedding refresh job can run without torch.
"""
