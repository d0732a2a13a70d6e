"""A minimal third-party dlguide plugin; see plugin.py (registration) and sine.py (the task)."""
