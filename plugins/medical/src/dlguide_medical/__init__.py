"""dlguide-medical: the medical chapter of dlguide as a plugin."""
