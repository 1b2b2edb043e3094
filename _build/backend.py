"""In-tree PEP 517 backend: setuptools, with the installing environment's packages visible.

pip builds in an isolated environment. Listing torch under build requirements would pull a
second, multi-GB torch there and compile against the wrong headers; leaving it out means the
build cannot import torch at all. This backend appends the installing interpreter's own
site-packages to sys.path (after the isolated ones), so setup.py builds against the torch
the user already has.
"""

import site
import sys
import sysconfig

from setuptools.build_meta import *  # noqa: F403  (the hooks pip calls)
from setuptools.build_meta import __all__  # noqa: F401

# after setuptools: the isolated environment's own come first
for path in [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()]:
    if path not in sys.path:
        sys.path.append(path)
