"""Feast definitions for the `feast` CLI, generated from the use-case config named by
``PAVEDML_USE_CASE`` (default telco_churn): entity, file source over the offline feature partitions,
feature view and the feature service named after the registered model. The pipeline applies the
very same objects (pavedml.steps.featurestore.definitions), so `feast apply` here is idempotent with it.

This folder's feature_store.yaml covers the local defaults only. To run the feast CLI with the same
settings as the steps (SQL registry, Redis online store), use
``python -m pavedml.tools.feast_repo --use-case NAME -- <feast args>``: it renders a repo with this
module's objects under ``<data root>/<use case>/feast/repo`` and runs feast there."""

import os

from pavedml.config import get_use_case
from pavedml.steps.featurestore import definitions

_defs = definitions(get_use_case(os.environ.get("PAVEDML_USE_CASE", "telco_churn")))
entity = _defs["entity"]
source = _defs["source"]
feature_view = _defs["feature_view"]
feature_service = _defs["feature_service"]
