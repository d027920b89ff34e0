"""``python -m oci_ref`` is ``oci-ref``."""

import sys

from oci_ref.cli import main

sys.exit(main())
