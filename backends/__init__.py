"""graphc backends: one package per backend (installed as ``graphc.backends``)."""
