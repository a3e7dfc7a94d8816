"""Every model, imported in one place so that Alembic and the drift test see the whole schema."""

from app.lib.orm import Base
from app.purposes.models import Purpose
from app.workspaces.models import ApiKey, Workspace

metadata = Base.metadata

__all__ = ["ApiKey", "Purpose", "Workspace", "metadata"]
