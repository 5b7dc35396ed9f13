"""The default digits run: for now the class-disjoint setup (class_disjoint.py)."""

from experiments.configs.class_disjoint import get_config  # noqa: F401
