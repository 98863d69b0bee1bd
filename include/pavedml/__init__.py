"""pavedml: the paved road from a daily raw batch to a monitored champion model.

Importing this package has no side effects and pulls in nothing heavy; every stage module
imports its libraries (pandas, GX, Feast, MLflow, Evidently) inside the functions that need them.
"""

__version__ = "0.1.0"
