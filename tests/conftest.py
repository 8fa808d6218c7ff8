"""Make `import streamlite` and `from server import ChatServer` (examples/) work from the project root without installing."""

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
for path in (str(ROOT), str(ROOT / "tests"), str(ROOT / "examples")):
    if path not in sys.path:
        sys.path.insert(0, path)
