"""Stand-in for ``google.colab.userdata`` (Colab's secrets): ``get(NAME)`` returns
the secret the test put in $ORCH_TEST_SECRET_<NAME>; an absent one raises, as Colab's
does."""

import os


class SecretNotFoundError(Exception):
    pass


def get(name: str) -> str:
    value = os.environ.get(f"ORCH_TEST_SECRET_{name}")
    if value is None:
        raise SecretNotFoundError(name)
    return value
