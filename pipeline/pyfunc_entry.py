"""Entry point of the logged model ("models from code"): MLflow runs this file at load time
instead of unpickling an object, so no pickled code travels with the model."""

import mlflow

from pipeline.pyfunc import NamelangModel

mlflow.models.set_model(NamelangModel())
