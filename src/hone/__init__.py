"""hone: fine-tune, evaluate and ship language models, honestly measured against their base."""

__version__ = "0.1.0"
