# setuptools cannot declare cffi_modules in pyproject.toml, so this stub carries it.
from setuptools import setup

setup(cffi_modules=["pymon/_native/_build.py:ffibuilder"])
