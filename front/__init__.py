"""The front: nginx in front of gunicorn (``bin/start-nginx``; what it guarantees: docs/front.md).

Standard library only: it runs before, and beside, the app, and never loads Flask or torch.
"""
