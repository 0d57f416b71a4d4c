"""The C parts of the router: optional, as the router runs the same Python code without
them (a machine without a C compiler installs the router all the same, warned)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("connectors.kafka._fast", ["connectors/kafka/_fast.c"], optional=True),
    ]
)
