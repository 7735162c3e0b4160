"""Dataset adapters: one module per public dataset; importing this package registers them all.

Add a dataset by writing ``<name>.py`` with a :class:`medcl.data.prepare.DatasetAdapter` subclass decorated with
:func:`medcl.data.prepare.register_adapter`, importing it below, and adding a test that builds a small tree in the
official layout.
"""

import importlib
import pkgutil

# Every module in this package is an adapter; importing them runs their @register_adapter decorators.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
