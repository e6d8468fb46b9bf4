"""The personalization model family in the inference worker: its ONNX artifact (`artifact.py`), the scoring of
(user, item) pairs from the online store's user/item/session rows (`scorer.py`, `interpret.py`) and the
`personalization.score` endpoint (`endpoint.py`), registered on the worker by `attach`."""
