"""Builds the compiled twins of validation and encoding (``selligent_segment/_compiled.pyx``)
where it can; everything else is in pyproject.toml.

The extension is optional: where no C compiler is found, or its build fails, the package
installs without it and runs the plain Python path, with the same results (``normalize``
about three times and encoding about one and a half times the instructions; see
docs/performance.md, "Compiled twins"). Without Cython (a build without isolation), the C
file generated into the sdist is compiled instead; without either, there is no extension.
"""

import os

from setuptools import Extension, setup

SOURCE = "selligent_segment/_compiled"

try:
    from Cython.Build import cythonize
except ImportError:
    cythonize = None

if cythonize is not None:
    extensions = cythonize(
        [Extension("selligent_segment._compiled", [f"{SOURCE}.pyx"])], quiet=True
    )
elif os.path.exists(f"{SOURCE}.c"):
    extensions = [Extension("selligent_segment._compiled", [f"{SOURCE}.c"])]
else:
    extensions = []
for extension in extensions:
    extension.optional = True  # set after cythonize, which does not carry it over
setup(ext_modules=extensions)
