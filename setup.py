"""Packaging beyond pyproject.toml: the top-level data folders ship inside the package.

``prompts/``, ``adapters/`` and ``eval/tasks/`` stay where the repository keeps them and are mapped to
``llmrec/_data/{prompts,adapters,tasks}`` in the wheel (files chosen by package-data in pyproject.toml);
``llmrec.package_data`` finds them there or, in a checkout, at the top level.
"""

from setuptools import find_namespace_packages, setup

DATA_PACKAGES = {
    "llmrec._data.prompts": "prompts",
    "llmrec._data.adapters": "adapters",
    "llmrec._data.tasks": "eval/tasks",
}

setup(
    # namespace discovery so config folders without __init__.py (e.g. recipes/configs/<recipe>/) ship too
    packages=find_namespace_packages(include=["llmrec", "llmrec.*"], exclude=["*.__pycache__"]) + list(DATA_PACKAGES),
    package_dir=DATA_PACKAGES,
)
