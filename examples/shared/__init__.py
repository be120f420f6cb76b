"""What both example apps share: the models, the policy and the data. Only the framework glue
differs (``examples/flask_app``: Flask-Login and templates; ``examples/fastapi_app``: an
``X-API-Key`` header and JSON), so both apps answer alike for the same user and document;
``tests/integrations/test_examples_agree.py`` runs one scenario table through both.

=====  ===============  =====  ======  ======  ===========================================
doc    title            owner  org     public  who may read / edit / delete
=====  ===============  =====  ======  ======  ===========================================
1      acme roadmap     bob    acme    no      ada bob / ada bob / ada
2      bob's notes      bob    --      no      bob / bob / --
3      globex budget    eve    globex  no      eve dan / eve / eve
4      press release    eve    globex  yes     everyone / eve / eve
=====  ===============  =====  ======  ======  ===========================================

The policy (``policy.py``) combines the three ways to grant:

* **rules**: a public document is readable; the owner reads and edits; staff (eve) view reports;
* **roles** in code: a member's role in the document's organisation (ada is ``admin`` of acme,
  bob ``viewer`` of acme, eve ``admin`` of globex);
* **stored grants** in the database: dan may read globex's documents (a grant scoped to that
  organisation) and, through the group ``auditors``, read the grants' audit log
  (``grants.audit``); ada holds ``reports.view``.

So ``reports.view``: ada and eve; ``grants.audit``: dan. Each user's API key is ``<name>-key``.
"""

from .data import (
    DEFAULT_SQLITE_FILE,
    USER_NAMES,
    api_key_of,
    init_db,
    is_empty,
    org_document_counts,
    seed,
)
from .models import Base, Document, Membership, Organisation, User, grants
from .policy import PERMISSIONS, org_roles, policy

__all__ = [
    "DEFAULT_SQLITE_FILE",
    "PERMISSIONS",
    "USER_NAMES",
    "Base",
    "Document",
    "Membership",
    "Organisation",
    "User",
    "api_key_of",
    "grants",
    "init_db",
    "is_empty",
    "org_document_counts",
    "org_roles",
    "policy",
    "seed",
]
