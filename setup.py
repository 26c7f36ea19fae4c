"""The compiled twin of the encode path (selligent_segment/_compiled.pyx), built where it can be.

Everything else is in pyproject.toml. The extension is optional: where no C compiler is
found, or its build fails, the package installs without it and runs the plain Python path
(the same messages and errors, about a third more instructions per message; see
docs/performance.md).
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = cythonize(
    [Extension("selligent_segment._compiled", ["selligent_segment/_compiled.pyx"])], quiet=True
)
for extension in extensions:
    extension.optional = True  # after cythonize, which does not carry it over
setup(ext_modules=extensions)
