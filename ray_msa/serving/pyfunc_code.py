"""The code of a logged ray_msa model (MLflow's models from code): stored with the model and run when
it is loaded, in place of a pickled Python object."""

import mlflow

from ray_msa.serving.pyfunc import MSAPyfunc

mlflow.models.set_model(MSAPyfunc())
