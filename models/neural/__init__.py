"""Neural backends for GPU nodes; weights come from the model store."""
