"""Stand-in for ``google.colab.auth``: signing in makes Application Default
Credentials available, as Colab does; here they are an ``authorized_user`` file for
the local Drive server, named by $ORCH_SANDBOX_ADC (written by the sandbox's colab
stand-in, or by a test)."""

import os


def authenticate_user() -> None:
    os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = os.environ["ORCH_SANDBOX_ADC"]
