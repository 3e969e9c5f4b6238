"""Phi-3.5-V (Phi-3 language model + CLIP ViT-L/14-336 with the HD image transform).

``config`` (reads ``config.json``), ``processing`` (the processor, no torchvision) and
``weights`` (loading the checkpoints as they are, LoRA merge) import torch only inside
functions; ``modeling`` defines the ``nn.Module`` classes and imports torch when imported.
"""
