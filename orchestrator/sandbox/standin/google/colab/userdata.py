"""Stand-in for ``google.colab.userdata`` (Colab's secrets): ``get(NAME)`` returns
the secret in $ORCH_SANDBOX_SECRET_<NAME> (put there by the sandbox's colab stand-in
from ``orch sandbox use``, or by a test); an absent one raises, as Colab's does."""

import os


class SecretNotFoundError(Exception):
    pass


def get(name: str) -> str:
    value = os.environ.get(f"ORCH_SANDBOX_SECRET_{name}")
    if value is None:
        raise SecretNotFoundError(name)
    return value
