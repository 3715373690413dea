"""The cluster fixture's teardown check can fail: it sees a KUBE-* chain left behind, and removes it.

Runs with the other cluster tests (root, iptables). The probe chain and rule
are made and removed here; the host ends as it began.
"""

from __future__ import annotations

import re
import subprocess

from tests.cluster import hoststate


def iptables(*args: str) -> None:
    subprocess.run(["iptables", "-w", "5", *args], check=True, capture_output=True, timeout=30)


PROBE = "KUBE-MLOPS-PROBE"


def test_a_left_chain_and_its_jump_are_reported_then_removed() -> None:
    before = hoststate.HostState.snapshot()
    iptables("-t", "nat", "-N", PROBE)
    try:
        # A quoted comment, as kube-proxy writes them, must survive the round trip to `-D`.
        iptables("-t", "nat", "-A", "OUTPUT", "-d", "10.0.0.0/24", "-m", "comment", "--comment", "mlops probe",
                 "-j", PROBE)
        left = hoststate.leftovers(before, hoststate.HostState.snapshot())
        assert f"iptables nat: :{PROBE}" in left
        assert any("-A OUTPUT" in line and PROBE in line for line in left), left
    finally:
        # Only the probe: the session's cluster may be running with chains of its own.
        hoststate.remove_iptables_changes(before, only=re.compile(PROBE))
    assert [line for line in hoststate.leftovers(before, hoststate.HostState.snapshot()) if PROBE in line] == []
