"""Reading and writing model checkpoints: fair-esm ``.pt``, Hugging Face folders and Orbax."""
