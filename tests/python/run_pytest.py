"""CTest entry point: runs the package's pytest suite, or exits 77 (a visible skip) without pytest."""
import sys

try:
    import pytest
except ImportError:
    print("SKIPPED: pytest is not installed (python3-pytest)")
    sys.exit(77)

sys.exit(pytest.main(["-ra", "-q", "-p", "no:cacheprovider", sys.argv[1]]))
