"""What a delivery-log query may hold, shared by the API and the CLI (so the CLI does not
import the server side): the delivery id's form, page sizes, the cursor."""

from __future__ import annotations

import re
from typing import Final

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 500
MAX_SINCE_CHARS: Final = 64
DELIVERY_ID_RE: Final = re.compile(r"dlv_[0-9a-f]{8,64}")
CURSOR_RE: Final = re.compile(r"[1-9][0-9]{0,17}")
