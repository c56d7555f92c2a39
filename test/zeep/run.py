"""Runs the zeep SOAP client tests (test_*.py beside this file, or the
modules/tests named on the command line, e.g. `run.py test_card_service`
or `run.py test_event_service.EventService.test_subscriptions`), prints
one line per test and a one-line summary. Exit 0 when nothing failed,
1 otherwise, 77 when zeep/lxml/requests are missing."""
import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

try:
    import lxml  # noqa: F401
    import requests  # noqa: F401
    import zeep  # noqa: F401
except ImportError as e:
    print("zeep SOAP tests: skipped, %s (Debian: apt-get install python3-zeep)" % e)
    sys.exit(77)


class Result(unittest.TextTestResult):
    def startTest(self, test):
        self._t0 = time.monotonic()
        super().startTest(test)

    def _line(self, test, what):
        self.stream.write("%s: %s (%.1fs)\n" % (what, test.id(), time.monotonic() - getattr(self, "_t0", 0)))
        self.stream.flush()

    passed = 0

    def addSuccess(self, test):
        unittest.TestResult.addSuccess(self, test)
        self.passed += 1
        self._line(test, "PASS")

    def addFailure(self, test, err):
        unittest.TestResult.addFailure(self, test, err)
        self._line(test, "FAIL")

    def addError(self, test, err):
        unittest.TestResult.addError(self, test, err)
        self._line(test, "ERROR")

    def addSkip(self, test, reason):
        unittest.TestResult.addSkip(self, test, reason)
        self._line(test, "SKIP")
        self.stream.write("      %s\n" % reason)


def main():
    loader = unittest.TestLoader()
    names = sys.argv[1:]
    if names:
        suite = loader.loadTestsFromNames(names)
    else:
        suite = loader.discover(HERE, pattern="test_*.py", top_level_dir=HERE)
    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=0, resultclass=Result)
    t0 = time.monotonic()
    r = runner.run(suite)
    print("zeep SOAP tests: %d passed, %d failed, %d skipped in %.1fs"
          % (r.passed, len(r.failures) + len(r.errors), len(r.skipped), time.monotonic() - t0))
    return 0 if r.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
