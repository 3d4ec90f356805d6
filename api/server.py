"""The ASGI factory a server process calls: settings from the environment."""

from __future__ import annotations

import os

from litestar import Litestar

from api.app import create_app
from application.settings import Settings
from workers.runtime import Runtime


def app_factory() -> Litestar:
    """Build the runtime and the app in this server worker process."""
    runtime = Runtime(Settings.from_env())
    app = create_app(runtime)
    if os.environ.get("XTOPAY_RUN_WORKERS", "1") != "0":
        app.on_startup.append(lambda: runtime.start_workers())
    app.on_shutdown.append(lambda: runtime.close())
    return app
