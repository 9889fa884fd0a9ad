"""Models: clusters (KMeans), online intent (River), batch intent (LightGBM), MLflow save/load."""

from models.clusters import ClusterModel, NotFittedError
from models.intent_batch import BatchIntentModel
from models.intent_online import OnlineIntentModel

__all__ = ["BatchIntentModel", "ClusterModel", "NotFittedError", "OnlineIntentModel"]
