"""dlguide: a deep-learning application suite with a small core and domain plugins.

The public API for plugin authors is two names: ``hookimpl`` marks hook implementations,
and ``Registry`` (passed to ``dlguide_register``) takes tasks, models and datasets.
Everything heavy (torch) lives in ``dlguide._task`` and ``dlguide._trainer`` and is imported
only when a run needs it.
"""

from dlguide.hookspecs import hookimpl
from dlguide._registry import Registry

__version__ = "0.1.0"
__all__ = ["Registry", "__version__", "hookimpl"]
