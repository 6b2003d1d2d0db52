"""The training and evaluation engines: drive any registered model (models/methods/base_model.py) through one loop."""
