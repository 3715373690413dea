"""What a test cluster changes on the host, and how it is undone.

The kubelet, kube-proxy, the CNI plugins and containerd change the host, not
only their own directories: iptables chains (``KUBE-*``, ``CNI-*``, in the v4
and v6 tables), a bridge, network namespaces, mounts, cgroups, a few kernel
sysctls, and processes (containerd's shims). ``HostState`` is a snapshot of
those; ``leftovers(before, after)`` says what a run left behind, so the
fixture can remove it and then assert that nothing is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

IPTABLES = ("iptables", "ip6tables")
TABLES = ("filter", "nat", "mangle", "raw", "security")
# Chains of the kubelet, kube-proxy and the CNI bridge/portmap plugins.
OUR_CHAIN = re.compile(r"^(KUBE-|CNI-)")
# Kernel settings the kubelet (protectKernelDefaults: false) and the CNI bridge change.
SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
)


def _run(*argv: str, check: bool = True) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def iptables_rules(binary: str, table: str) -> list[str]:
    """The table's chains (``:NAME``) and rules (``-A ...``), without counters or comments."""
    if shutil.which(binary) is None:
        return []
    lines = []
    for line in _run(f"{binary}-save", "-t", table, check=False).splitlines():
        if line.startswith(":"):
            lines.append(line.split()[0])
        elif line.startswith("-A "):
            lines.append(line)
    return lines


def sysctls() -> dict[str, str]:
    values = {}
    for name in SYSCTLS:
        with contextlib.suppress(OSError):
            values[name] = Path("/proc/sys", name).read_text().strip()
    return values


def restore_sysctls(values: dict[str, str]) -> None:
    for name, value in values.items():
        path = Path("/proc/sys", name)
        with contextlib.suppress(OSError):
            if path.read_text().strip() != value:
                path.write_text(value + "\n")


def links() -> set[str]:
    return {line.split(":")[1].strip().split("@")[0] for line in _run("ip", "-o", "link", "show").splitlines()}


def named_netns() -> set[str]:
    directory = Path("/var/run/netns")
    return {p.name for p in directory.iterdir()} if directory.is_dir() else set()


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path``, deepest first."""
    prefix = str(path)
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def processes_of(work_dir: Path, cgroup_leaf: str) -> dict[int, str]:
    """Processes whose command line names ``work_dir`` or that live in a cgroup under ``cgroup_leaf``."""
    found = {}
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            cgroups = (entry / "cgroup").read_text()
        except OSError:
            continue
        if str(work_dir) in cmdline or f"/{cgroup_leaf}/" in cgroups or cgroups.rstrip().endswith(f"/{cgroup_leaf}"):
            found[int(entry.name)] = cmdline or f"[pid {entry.name}]"
    return found


def sockets_on(address: str) -> list[str]:
    """Listening TCP and bound UDP sockets on the IPv4 ``address`` (``"udp 10.244.0.1:53"``), from /proc/net."""
    packed = "".join(f"{int(octet):02X}" for octet in reversed(address.split(".")))
    found = []
    for proto, wanted in (("tcp", "0A"), ("udp", "07")):  # LISTEN; an unconnected datagram socket
        try:
            lines = Path(f"/proc/net/{proto}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            ip, port = local.split(":")
            if ip == packed and state == wanted:
                found.append(f"{proto} {address}:{int(port, 16)}")
    return found


def nft_tables() -> set[tuple[str, str]]:
    """(family, name) of every nftables table; iptables-nft makes ``ip filter`` & co. on first use."""
    if shutil.which("nft") is None:
        return set()
    data = json.loads(_run("nft", "-j", "list", "tables", check=False) or '{"nftables": []}')
    return {(o["table"]["family"], o["table"]["name"]) for o in data["nftables"] if "table" in o}


def nft_table_unused(family: str, name: str) -> bool:
    """No rules and no chains but the built-in (hooked) ones: what iptables-nft leaves after a flush."""
    data = json.loads(_run("nft", "-j", "list", "table", family, name, check=False) or '{"nftables": []}')
    objects = data["nftables"]
    return not any("rule" in o or ("chain" in o and "hook" not in o["chain"]) for o in objects)


@dataclass
class HostState:
    iptables: dict[str, list[str]] = field(default_factory=dict)
    nft_tables: set[tuple[str, str]] = field(default_factory=set)
    links: set[str] = field(default_factory=set)
    netns: set[str] = field(default_factory=set)

    @classmethod
    def snapshot(cls) -> "HostState":
        return cls(
            iptables={f"{b} {t}": iptables_rules(b, t) for b in IPTABLES for t in TABLES},
            nft_tables=nft_tables(),
            links=links(),
            netns=named_netns(),
        )


def our_iptables_lines(lines: list[str]) -> list[str]:
    """Chains and rules that belong to the kubelet, kube-proxy or CNI plugins."""
    ours = []
    for line in lines:
        if line.startswith(":"):
            if OUR_CHAIN.match(line[1:]):
                ours.append(line)
        else:
            parts = line.split()
            chain = parts[1]
            target = parts[parts.index("-j") + 1] if "-j" in parts else ""
            if OUR_CHAIN.match(chain) or OUR_CHAIN.match(target):
                ours.append(line)
    return ours


def remove_iptables_changes(before: HostState, only: re.Pattern[str] | None = None) -> None:
    """Delete the KUBE-*/CNI-* rules and chains that were not there before (those matching ``only``, if given)."""
    for binary in IPTABLES:
        if shutil.which(binary) is None:
            continue
        for table in TABLES:
            old = set(before.iptables.get(f"{binary} {table}", []))
            current = iptables_rules(binary, table)
            new = [line for line in our_iptables_lines(current)
                   if line not in old and (only is None or only.search(line))]
            # Rules first (jumps into our chains from the built-in ones), then the chains.
            for rule in (line for line in new if line.startswith("-A ")):
                args = rule.split()
                _run(binary, "-w", "5", "-t", table, "-D", *_unquote(args[1:]), check=False)
            chains = [line[1:] for line in new if line.startswith(":")]
            for chain in chains:
                _run(binary, "-w", "5", "-t", table, "-F", chain, check=False)
            for chain in chains:
                _run(binary, "-w", "5", "-t", table, "-X", chain, check=False)
    # Tables that iptables-nft created for them and that are empty again (a table
    # still in use has rules, so this is safe while a cluster runs).
    for family, name in nft_tables() - before.nft_tables:
        if nft_table_unused(family, name):
            _run("nft", "delete", "table", family, name, check=False)


def _unquote(args: list[str]) -> list[str]:
    """iptables-save quotes comments ("...") that contain spaces; rejoin them into one argument."""
    out: list[str] = []
    buf: list[str] | None = None
    for arg in args:
        if buf is not None:
            buf.append(arg)
            if arg.endswith('"'):
                out.append(" ".join(buf)[1:-1])
                buf = None
        elif arg.startswith('"') and not (len(arg) > 1 and arg.endswith('"')):
            buf = [arg]
        elif arg.startswith('"') and arg.endswith('"') and len(arg) > 1:
            out.append(arg[1:-1])
        else:
            out.append(arg)
    return out


def leftovers(before: HostState, after: HostState) -> list[str]:
    """What ``after`` has that ``before`` had not: each a human-readable line."""
    problems = []
    for key, lines in after.iptables.items():
        old = set(before.iptables.get(key, []))
        problems += [f"{key}: {line}" for line in our_iptables_lines(lines) if line not in old]
    problems += [f"nftables table {f} {n}" for f, n in sorted(after.nft_tables - before.nft_tables)]
    problems += [f"network link {name}" for name in sorted(after.links - before.links)]
    problems += [f"network namespace {name}" for name in sorted(after.netns - before.netns)]
    return problems


def unmount_all(path: Path) -> None:
    for point in mounts_under(path):
        if subprocess.run(["umount", point], capture_output=True, timeout=30, check=False).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=30, check=False)
