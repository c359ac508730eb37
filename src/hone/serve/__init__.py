"""`hone serve`: an OpenAI-compatible server for a base model and its LoRA adapters, with
dynamic batching across adapters and JSON-schema constrained decoding."""
