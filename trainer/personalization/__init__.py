"""The personalization model family: LightGCN-style embeddings of the user-item interaction graph with a conversion
head, trained on a time split of the clickstream world (feature_svc/world/personalization), compared with a
popularity ranking and matrix factorisation (the same embeddings without graph propagation), exported to ONNX.

    python -m trainer.personalization --out var/models-personalization --report reports/model/personalization
"""
