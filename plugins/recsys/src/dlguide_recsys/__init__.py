"""dlguide-recsys: the recsys chapter of dlguide as a plugin."""
