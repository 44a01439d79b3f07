"""A machine for Ray's launcher to log into, on this one: a real OpenSSH server on 127.0.0.1.

The server runs in its own PID and mount namespaces (``unshare``, so root only), which makes it a
node of its own as far as Ray's commands can tell: ``ray stop`` run there (by ``ray up`` and
``ray down``) sees and stops only the processes started through it, and the node's user has a
home of its own (a copy of /etc/passwd with a throwaway home is bound over the real one inside the
namespace), so file mounts, ``~/.bashrc`` edits and ``~/.ray`` land there. Network and files are
shared with the test, as they would be with a machine on the same network and a shared disk.
Keys (host and user) are throwaway; only public-key login is accepted; environment variables
given as ``env`` are set for every session (``SetEnv``), the way an instance profile gives a cloud
machine its object-store credentials.
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass

TOOLS = ("sshd", "ssh", "ssh-keygen", "rsync", "nc", "unshare")


def missing_tools() -> list[str]:
    found = {t: shutil.which(t) or shutil.which(t, path="/usr/sbin:/sbin") for t in TOOLS}
    return [t for t, path in found.items() if not path]


def unavailable() -> str | None:
    """Why no node can be started here, or None. With DEJAVU_REQUIRE_CLUSTER=1 (set by .ci/run)
    a reason is an error instead: the cluster tier must run there, not skip."""
    missing = missing_tools()
    reason = (f"needs {', '.join(missing)} (Debian: openssh-server rsync netcat-openbsd; .ci/run installs them)"
              if missing else "needs root for the node's PID and mount namespaces (unshare)" if os.geteuid() != 0
              else None)
    if reason and os.environ.get("DEJAVU_REQUIRE_CLUSTER") == "1":
        raise RuntimeError(f"the cluster tier cannot run here: {reason} (DEJAVU_REQUIRE_CLUSTER=1)")
    return reason


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Node:
    user: str
    home: str  # the node user's home as the node sees it
    key: str  # private key that logs in
    port: int
    process: subprocess.Popen

    @property
    def proxy_command(self) -> str:
        return f"nc 127.0.0.1 {self.port}"

    def ssh(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ssh", "-i", self.key, "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={os.devnull}",
             "-o", f"ProxyCommand={self.proxy_command}", "-o", "LogLevel=ERROR", f"{self.user}@127.0.0.1", command],
            capture_output=True, text=True, timeout=timeout,
        )

    def stop(self) -> None:
        """Ends the namespace: every process the node started goes with its first process."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)


def start_node(root: str, env: dict[str, str]) -> Node:
    user = pwd.getpwuid(os.getuid()).pw_name
    home = os.path.join(root, "home")
    os.makedirs(os.path.join(home, ".ssh"), mode=0o700)
    key = os.path.join(root, "user_key")
    for path in (os.path.join(root, "host_key"), key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path], check=True)
    shutil.copy(key + ".pub", os.path.join(home, ".ssh", "authorized_keys"))
    with open("/etc/passwd") as src, open(os.path.join(root, "passwd"), "w") as dst:
        for line in src:
            fields = line.rstrip("\n").split(":")
            if fields[0] == user:
                fields[5] = home
            dst.write(":".join(fields) + "\n")
    port = free_port()
    lines = [f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {root}/host_key", f"PidFile {root}/sshd.pid",
             "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
             "PermitRootLogin prohibit-password", "StrictModes no", "MaxStartups 50"]
    if env:  # one SetEnv line: sshd takes the first line of a keyword only
        lines.append("SetEnv " + " ".join(f"{k}={v}" for k, v in env.items()))
    with open(os.path.join(root, "sshd_config"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
    sshd = shutil.which("sshd") or shutil.which("sshd", path="/usr/sbin:/sbin")
    inner = f"mount --bind {root}/passwd /etc/passwd && exec {sshd} -D -e -f {root}/sshd_config"
    log = open(os.path.join(root, "sshd.log"), "w")
    process = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "--mount", "sh", "-c", inner],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    node = Node(user, home, key, port, process)
    deadline = time.time() + 30
    while node.ssh("true", timeout=20).returncode != 0:
        if time.time() > deadline or process.poll() is not None:
            node.stop()
            raise RuntimeError("the SSH node did not come up: " + open(os.path.join(root, "sshd.log")).read()[-2000:])
        time.sleep(0.3)
    return node
