"""ml_collections configurations: released model shapes and experiments (``get_config(arg)``)."""
