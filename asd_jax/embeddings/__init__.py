"""Pretrained clip embeddings (VGGish): model loading, weight conversion to Flax, extraction, pooling and caching.

TensorFlow is optional and imported only when a TensorFlow model is loaded.
"""
