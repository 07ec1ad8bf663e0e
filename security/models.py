"""Every model module, imported so ``Base.metadata`` is complete (Alembic autogenerate, tests).

Add each new slice's models module here.
"""

from security.accounts import models as accounts_models
from security.appeals import models as appeals_models
from security.audit import models as audit_models
from security.clients import models as clients_models
from security.credentials import models as credentials_models
from security.db import Base
from security.delivery import outbox as outbox_models
from security.locks import models as locks_models
from security.risk import models as risk_models

__all__ = [
    "Base", "accounts_models", "appeals_models", "audit_models", "clients_models", "credentials_models", "locks_models",
    "outbox_models", "risk_models",
]
