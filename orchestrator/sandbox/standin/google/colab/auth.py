"""Stand-in for ``google.colab.auth``: signing in makes Application Default
Credentials available, as Colab does; here they are an ``authorized_user`` file for
the local Drive server, named by $ORCH_SANDBOX_ADC (written by the sandbox's colab
stand-in, or by a test).

Colab asks the page for consent first. A kernel run by the colab CLI's ``exec`` has
no page to ask on (the real kernel waits until exec cuts the cell): the sandbox's
colab stand-in sets ORCH_SANDBOX_CONSENT=none, and signing in fails at once."""

import os


class MessageError(RuntimeError):
    pass


def authenticate_user() -> None:
    if os.environ.get("ORCH_SANDBOX_CONSENT") == "none":
        raise MessageError("authenticate_user() needs the Colab page to ask for consent, "
                           "and `colab exec` shows none")
    os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = os.environ["ORCH_SANDBOX_ADC"]
