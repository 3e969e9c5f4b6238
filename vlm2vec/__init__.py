"""The VLM2Vec contrastive trainer."""
