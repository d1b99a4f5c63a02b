"""Packages for setuptools; everything else is in pyproject.toml.

The top-level ``configs/`` folder (tuned configs, the source of truth) is installed as ``drl/configs``
so that a non-editable install finds it (see ``drl.api.CONFIG_DIR``).
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["drl", "drl.*", "envs", "envs.*"]), "drl.configs"],
    package_dir={"drl.configs": "configs"},
    package_data={"envs": ["**/*.xml"], "drl.configs": ["*/*.yaml"]},
)
