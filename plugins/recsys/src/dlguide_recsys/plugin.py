"""Entry point of dlguide-recsys. Imported by ``dlguide list``: keep it free of heavy imports.

The plugin is packaged and discovered; its tasks are not implemented yet, so it registers nothing.
"""
