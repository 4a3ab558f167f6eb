"""Model files: our safetensors format, official StyleGAN2-ADA pickles, and the loaders' registry."""
