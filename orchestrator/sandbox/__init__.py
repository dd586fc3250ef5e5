"""orch's sandbox: the remote path without Google, on this machine.

``drive`` is a local Drive v3 server (the real googleapiclient and pydrive2 talk to
it); ``standin/google/colab`` is a stand-in for Colab's ``google.colab`` package, a
plain folder put on a sandbox kernel's PYTHONPATH only (``google`` never becomes
importable from an orch install).
"""
