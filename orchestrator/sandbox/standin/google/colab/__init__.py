"""Stand-in for Colab's ``google.colab`` package, for running orch's notebooks on a
local kernel (orch's sandbox and the tests). Only what the notebooks use is here.
This folder is put on a sandbox kernel's PYTHONPATH only; it is not Colab."""
