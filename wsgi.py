"""The WSGI entry point gunicorn serves: `wsgi:app`."""
import sys

from gateway import create_app
from gateway.config import ConfigError

try:
    app = create_app()
except ConfigError as e:
    sys.stderr.write(f"gateway: configuration error: {e}\n")
    sys.exit(4)  # gunicorn's "app failed to load" exit: the arbiter stops instead of respawning
