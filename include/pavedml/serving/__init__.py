"""Online serving: ``python -m pavedml serve --use-case NAME`` (see :mod:`pavedml.serving.app`)."""
