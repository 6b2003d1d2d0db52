"""The training and evaluation engines: drive any registered model (models/base_model.py) through one loop."""
