"""Loss networks (perceptual losses) shared by the trainable methods."""
