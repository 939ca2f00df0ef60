"""The web console's static files (SPEC §9), served at /ui/ by `api/console.py`."""
