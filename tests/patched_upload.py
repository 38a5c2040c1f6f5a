"""Model uploads that hang or fail, for the lifecycle tests. As a module, ``python -m pipeline.train`` whose
upload marks a file and then waits: a real process to kill mid-upload.

    python -m tests.patched_upload <flag file> <overrides of pipeline.train...>
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.tracking.run import TrackedRun
from pipeline.train import main

UPLOAD_ERROR = "the artifact store refused the model"


def hanging_upload(flag: Path) -> Callable[..., str]:
    def log_model(*args: Any, **kwargs: Any) -> str:
        flag.touch()
        time.sleep(600)
        raise AssertionError("the process was to be killed during its upload")

    return log_model


def failing_upload(*args: Any, **kwargs: Any) -> str:
    raise RuntimeError(UPLOAD_ERROR)


if __name__ == "__main__":
    flag, *overrides = sys.argv[1:]
    TrackedRun.log_model = hanging_upload(Path(flag))  # type: ignore[method-assign]
    sys.argv = [sys.argv[0], *overrides]
    main()
