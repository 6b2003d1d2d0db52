"""Methods: the trainable `BaseModel` subclasses (losses, optimisers, schedules around a network)."""
