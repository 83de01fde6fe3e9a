"""Packaging glue: ship the top-level ``potentials/`` folder as ``matscale.potentials``.

All metadata lives in pyproject.toml; this file only maps the data package.
"""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["matscale", "matscale.*"]) + ["matscale.potentials"],
    package_dir={"matscale.potentials": "potentials"},
)
