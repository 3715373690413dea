"""The operator's log: each line once (our logger and kopf's share one handler)."""

from __future__ import annotations

import subprocess
import sys


def test_each_log_line_is_printed_once() -> None:
    code = ("import logging; from mlops_operator.k8s.main import configure_logging; configure_logging(False); "
            "logging.getLogger('mlops_operator').info('reconciled iris-v1'); logging.getLogger('kopf.x').warning('kopf says hi')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    text = out.stdout + out.stderr
    assert text.count("reconciled iris-v1") == 1 and text.count("kopf says hi") == 1, text


def test_kopfs_per_event_chatter_stays_out_of_the_log_unless_verbose() -> None:
    code = ("import logging, sys; from mlops_operator.k8s.main import configure_logging; configure_logging(sys.argv[1] == 'v'); "
            "logging.getLogger('kopf.objects').info(\"Handler 'job_event' succeeded.\"); "
            "logging.getLogger('kopf.objects').error('Handler failed with an exception')")
    for mode, chatter in (("q", 0), ("v", 1)):
        out = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, timeout=60, check=True)
        text = out.stdout + out.stderr
        assert text.count("succeeded") == chatter and text.count("failed with an exception") == 1, text


def test_the_operator_knows_who_it_is_without_a_password_entry(monkeypatch) -> None:
    """The image runs as uid 65532, which has no passwd entry: kopf's own default identity asks for it and crashes."""
    import getpass
    import os

    from mlops_operator.k8s.main import operator_identity

    def no_entry(*_: object) -> str:
        raise KeyError("getpwuid(): uid not found: 65532")  # what the password database says in the image

    monkeypatch.setattr(getpass, "getuser", no_entry)
    assert operator_identity({"POD_ID": "mlops-0"}) == "mlops-0" and operator_identity({"POD_NAME": "mlops-1"}) == "mlops-1"
    assert operator_identity({}).endswith(f"/{os.getpid()}")
