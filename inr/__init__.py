"""Model zoo: the registry and every model family (importing this package registers them all)."""

from inr import hnerv, nerv, nervpp, nirvana, recombiner  # noqa: F401  (registration side effects)
from inr.config import Geometry
from inr.registry import ModelSpec, get, get_by_id, names, spec_of

__all__ = ["Geometry", "ModelSpec", "get", "get_by_id", "names", "spec_of"]
