"""The Flask layer: blueprints and error handlers that call into ``classifier``."""
