"""Runs a command and prints the wall time and the CPU time (user + system)
of its whole process tree, as `wall_s cpu_s` on stderr.

/usr/bin/time counts only the children a process waits for, and PyFlink's
JVM is not one of them. So the tree's processes are read from /proc every
50 ms and each one's last CPU time is kept. What a process spends after
the last read before it exits (under 50 ms) is missed.

    python cputime.py OUT_FILE COMMAND...
"""
import os
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def tree(root):
    """The pids of `root` and its descendants, with each one's CPU seconds."""
    children, cpu = {}, {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        ppid, utime, stime = int(fields[1]), int(fields[11]), int(fields[12])
        children.setdefault(ppid, []).append(int(pid))
        cpu[int(pid)] = (utime + stime) / TICK
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in cpu:
            found[pid] = cpu[pid]
        todo.extend(children.get(pid, []))
    return found


out, command = sys.argv[1], sys.argv[2:]
started = time.monotonic()
with open(out, "w") as log:
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    seen = {}
    while process.poll() is None:
        seen.update(tree(process.pid))
        time.sleep(0.05)
wall = time.monotonic() - started
print(f"{wall:.2f} {sum(seen.values()):.2f}", file=sys.stderr)
sys.exit(process.returncode)
