"""Stand-in for Colab's ``google.colab`` package, for executing orch's notebooks on a
local kernel in tests. Only what the notebooks use is here."""
