"""Applying a trained model: its stored files, the MLflow pyfunc, the Ray Serve deployment."""
