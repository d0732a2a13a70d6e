"""dlguide-nlp: the nlp chapter of dlguide as a plugin."""
