"""The DVC stages: `python -m stages.<name>` runs one stage of dvc.yaml; one module per stage."""
