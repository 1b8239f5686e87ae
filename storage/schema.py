"""Every table of the service: importing this module fills `Base.metadata` completely.

Migrations and tests use it; a new model module is added to the imports below.
"""

from storage import group_models, lifecycle_models, models, staff_models, wecom_kf_models  # noqa: F401
from storage.models import Base

metadata = Base.metadata
