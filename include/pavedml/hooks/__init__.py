"""Derived-feature hooks: ``module:function`` taking and returning a DataFrame, named in the use-case
config (``features.derived_hook``). Keep them pure and deterministic."""
