"""Container health check: a C-ECHO to the local gateway; exit 0 when it answers Success.

Used by ``gateway/Dockerfile`` (HEALTHCHECK) and usable by any supervisor:
``python -m skypacs.dimse.healthcheck [--port 11112] [--ae-title SKYPACS]``.
"""

from __future__ import annotations

import argparse
import os
import sys

from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from skypacs.config import DEFAULT_AE_TITLE, DEFAULT_DIMSE_PORT, ENV_AE_TITLE, ENV_DIMSE_PORT

HEALTHCHECK_AE_TITLE = "HEALTHCHECK"


def echo(host: str, port: int, called_ae: str, *, timeout: float = 5.0) -> bool:
    ae = AE(ae_title=HEALTHCHECK_AE_TITLE)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(Verification)
    association = ae.associate(host, port, ae_title=called_ae)
    if association.is_rejected:
        # An allow-list that does not name HEALTHCHECK rejects us: a well-formed rejection is still a
        # gateway that is up and speaking DICOM (no bypass of the allow-list is needed for health).
        return True
    if not association.is_established:
        return False
    try:
        status = association.send_c_echo()
        return bool(status) and int(status.Status) == 0
    finally:
        association.release()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get(ENV_DIMSE_PORT, DEFAULT_DIMSE_PORT)))
    parser.add_argument("--ae-title", default=os.environ.get(ENV_AE_TITLE, DEFAULT_AE_TITLE))
    args = parser.parse_args(argv)
    healthy = echo(args.host, args.port, args.ae_title)
    print("healthy" if healthy else "unhealthy")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
