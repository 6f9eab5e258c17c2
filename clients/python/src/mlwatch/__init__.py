"""mlwatch for Python model servers.

- `Monitor`: logs inference and label events to an mlwatch collector from a
  background thread (bounded queue, batches, retries, counted drops).
- `MlwatchMiddleware`, `annotate`, `current_event_id`: one event per
  FastAPI / Starlette request; `Monitor.track`: one per call of a predict
  function.
- `build_profile`, `upload_profile`: drift reference profiles from a pandas
  DataFrame or a pyarrow Table, equal to ``mlwatch-profile``'s.

See docs/python.md in the mlwatch repository.
"""

from .middleware import MlwatchMiddleware, annotate, current_event_id
from .monitor import Monitor, Rejection, Stats, Tracked, new_event_id
from .profile import Profile, ProfileError, ProfileUploadError, build_profile, upload_profile
from .validate import ValidationError

__all__ = [
    "Monitor",
    "MlwatchMiddleware",
    "Profile",
    "ProfileError",
    "ProfileUploadError",
    "Rejection",
    "Stats",
    "Tracked",
    "ValidationError",
    "annotate",
    "build_profile",
    "current_event_id",
    "new_event_id",
    "upload_profile",
]
__version__ = "0.1.0"
