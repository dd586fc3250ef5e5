"""Stand-in for ``google.colab.auth``: signing in makes Application Default
Credentials available, as Colab does; here they are an ``authorized_user`` file for
the tests' local Drive server (named by $ORCH_TEST_ADC)."""

import os


def authenticate_user() -> None:
    os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = os.environ["ORCH_TEST_ADC"]
