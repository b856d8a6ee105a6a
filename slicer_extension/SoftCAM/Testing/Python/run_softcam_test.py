"""Run SoftCAMTest in a headless Slicer, straight from the source tree (no extension build):

    Slicer --no-splash --no-main-window --python-script slicer_extension/SoftCAM/Testing/Python/run_softcam_test.py

Exits with status 0 when the test passes, 1 otherwise.
"""

import os
import sys
import traceback

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

import slicer  # noqa: E402

status = 1
try:
    import SoftCAM

    SoftCAM.SoftCAMTest().runTest()
    print("SoftCAMTest passed")
    status = 0
except Exception:
    traceback.print_exc()
slicer.util.exit(status)
