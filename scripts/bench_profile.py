"""What a FUSE daemon spends per request during one timed step of scripts/bench (--profile).

Over the timed part only, it counts:
- the requests the kernel sent the mount (tracepoint fuse:fuse_request_send, Linux 6.18,
  filtered to the mount's connection; counted with `perf stat -a`, whichever process sent them);
- the daemon's syscalls, context switches and CPU time (`perf stat -p PID`, all its threads);
- with --perf-record, where the daemon's CPU time goes (`perf record -g -p PID`): the share of
  samples in the daemon's own code (its binary) and the top symbols.

Both perf processes start with their events disabled and are switched on and off through a
control fifo (`--control fifo:CTL,ACK -D -1`), so attaching costs the timed part nothing and
nothing outside it is counted. Only the Python 3 standard library is used.
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

ATTACH_TIMEOUT = 20  # seconds perf may take to attach and answer the first control command


class PerfError(Exception):
    pass


def connection_of(mnt):
    """The fuse connection number as the tracepoint shows it: the kernel's dev_t of the mount."""
    dev = os.stat(mnt).st_dev
    return (os.major(dev) << 20) | os.minor(dev)


def available():
    """None if perf and the fuse tracepoint are usable here, else why not."""
    if shutil.which("perf") is None:
        return "perf is not installed (apt-get install linux-perf)"
    events = "/sys/kernel/tracing/events/fuse/fuse_request_send"
    if not os.path.exists(events):
        if not os.path.ismount("/sys/kernel/tracing"):
            subprocess.run(["mount", "-t", "tracefs", "nodev", "/sys/kernel/tracing"],
                           capture_output=True)
        if not os.path.exists(events):
            return "the kernel has no fuse:fuse_request_send tracepoint (Linux 6.18+)"
    return None


class _Perf:
    """One perf process started with its events disabled, driven through a control fifo."""

    def __init__(self, tmp, tag, args):
        self.ctl = os.path.join(tmp, f"{tag}.ctl")
        self.ack = os.path.join(tmp, f"{tag}.ack")
        self.out = os.path.join(tmp, f"{tag}.out")
        os.mkfifo(self.ctl)
        os.mkfifo(self.ack)
        cmd = args[:2] + ["--control", f"fifo:{self.ctl},{self.ack}", "-D", "-1"] + args[2:]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        # Opening the fifos blocks until perf opens its ends: O_RDWR never blocks, and perf
        # reads commands only once it has attached.
        self.ctl_fd = os.open(self.ctl, os.O_RDWR)
        self.ack_fd = os.open(self.ack, os.O_RDWR | os.O_NONBLOCK)

    def command(self, word):
        os.write(self.ctl_fd, (word + "\n").encode())
        deadline = time.time() + ATTACH_TIMEOUT
        got = b""
        while b"ack" not in got:
            if self.proc.poll() is not None:
                raise PerfError(f"perf exited: {self.proc.stderr.read().decode()[-300:]}")
            if time.time() > deadline:
                raise PerfError(f"perf did not acknowledge {word!r} in {ATTACH_TIMEOUT} s")
            try:
                got += os.read(self.ack_fd, 64)
            except BlockingIOError:
                time.sleep(0.005)

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for fd in (self.ctl_fd, self.ack_fd):
            os.close(fd)


def _stat_counts(path):
    """{event: count} from `perf stat -x,` output."""
    counts = {}
    with open(path) as f:
        for line in f:
            parts = line.strip().split(",")
            if len(parts) < 3 or line.startswith("#"):
                continue
            try:
                counts[parts[2]] = float(parts[0])
            except ValueError:
                counts[parts[2]] = None  # "<not counted>"
    return counts


class DaemonProfile:
    """Context manager around one timed step: `with DaemonProfile(pid, mnt, binary) as p:
    ...`; afterwards p.result is a dict (requests, syscalls, context_switches, cpu_ms and,
    with record=True, own_share and top) or p.error says why there is none."""

    def __init__(self, pid, mnt, binary, record=False):
        self.pid, self.mnt, self.binary, self.record = pid, mnt, binary, record
        self.result, self.error = None, None
        self.perfs = []
        self.tmp = None

    def __enter__(self):
        self.tmp = tempfile.mkdtemp(prefix="bench-profile.")
        try:
            conn = connection_of(self.mnt)
            self.requests = _Perf(self.tmp, "requests", [
                "perf", "stat", "-x,", "-o", os.path.join(self.tmp, "requests.out"), "-a",
                "-e", "fuse:fuse_request_send", "--filter", f"connection == {conn}"])
            self.perfs.append(self.requests)
            self.daemon = _Perf(self.tmp, "daemon", [
                "perf", "stat", "-x,", "-o", os.path.join(self.tmp, "daemon.out"),
                "-e", "syscalls:sys_enter_*,context-switches,task-clock", "-p", str(self.pid)])
            self.perfs.append(self.daemon)
            if self.record:
                self.recorder = _Perf(self.tmp, "record", [
                    "perf", "record", "-q", "-g", "-F", "999", "-o",
                    os.path.join(self.tmp, "perf.data"), "-p", str(self.pid)])
                self.perfs.append(self.recorder)
            for p in self.perfs:
                p.command("enable")
        except (PerfError, OSError) as e:
            self.error = str(e)
            self._stop_all()
        return self

    def _stop_all(self):
        for p in self.perfs:
            try:
                p.stop()
            except OSError:
                pass
        self.perfs = []

    def __exit__(self, *exc):
        try:
            if self.error is None:
                for p in self.perfs:
                    p.command("disable")
                self._stop_all()
                self.result = self._read()
        except (PerfError, OSError, ValueError) as e:
            self.error = str(e)
        finally:
            self._stop_all()
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False

    def _read(self):
        req = _stat_counts(os.path.join(self.tmp, "requests.out"))
        dmn = _stat_counts(os.path.join(self.tmp, "daemon.out"))
        calls = {k.split("sys_enter_", 1)[1]: v for k, v in dmn.items()
                 if k.startswith("syscalls:sys_enter_") and v}
        out = {
            "requests": req.get("fuse:fuse_request_send"),
            "syscalls": sum(calls.values()),
            "calls": sorted(calls.items(), key=lambda kv: -kv[1]),
            "context_switches": dmn.get("context-switches"),
            "cpu_ms": dmn.get("task-clock"),
        }
        if self.record:
            out.update(self._report(os.path.join(self.tmp, "perf.data")))
        return out

    def _report(self, data):
        """Share of samples in the daemon's binary, and the top symbols (self time)."""
        def report(sort):
            r = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", sort,
                                "--stdio", "-q", "--percent-limit", "2"],
                               capture_output=True, timeout=300)
            rows = []
            for line in r.stdout.decode(errors="replace").splitlines():
                m = re.match(r"\s*([\d.]+)%\s+(.+?)\s*$", line)
                if m:
                    rows.append((float(m.group(1)), m.group(2)))
            return rows
        own = os.path.basename(self.binary)
        share = sum(p for p, dso in report("dso") if dso == own)
        top = [(p, re.sub(r"^\[[k.]\]\s*", "", sym)) for p, sym in report("sym")[:5]]
        return {"own_share": share, "top": top}


# The calls a daemon makes to take requests and answer them, and to poll for the next one
# (/dev/fuse reads and writes, O_NONBLOCK switches, yields, io_uring), apart from the calls that
# serve a request on the layers.
TRANSPORT_CALLS = {"read", "readv", "write", "writev", "fcntl", "sched_yield", "io_uring_enter",
                   "futex", "clock_gettime", "poll", "ppoll", "epoll_wait"}


def report(rows, results, systems, record):
    """Markdown lines: per workload and FUSE system, what the daemon spent per request (the
    profiled repetition with the median time where there were several)."""
    head = ["workload", "system", "requests", "daemon CPU µs / request", "syscalls / request",
            "of them taking, answering and polling for requests",
            "serving syscalls a request, by name", "context switches / request"]
    if record:
        head += ["samples in the daemon's own code", "top symbols (self, % of samples)"]
    lines = ["| " + " | ".join(head) + " |",
             "|---|---|" + "---:|" * 4 + "---|---:|" + ("---:|---|" if record else "")]
    for name, _, _ in rows:
        for system in systems:
            profs = sorted(results.get((name, system), {}).get("prof", []), key=lambda x: x[0])
            if not profs:
                continue
            prof = profs[len(profs) // 2][1]
            cells = [name, system] + per_request(prof)
            if record:
                cells.append(f"{prof.get('own_share', 0):.0f} %")
                cells.append("; ".join(f"{sym} {pct:.0f}" for pct, sym in prof.get("top", [])))
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def per_request(prof):
    """Cells from one profile result: requests, daemon CPU µs, syscalls (all, then those of the
    transport), the serving syscalls by name, and context switches a request."""
    n = prof.get("requests") or 0
    if not n:
        return [f"{n:.0f}", "n/a", "n/a", "n/a", "n/a", "n/a"]

    def each(key, scale=1.0, fmt="{:.1f}"):
        v = prof.get(key)
        return "n/a" if v is None else fmt.format(v * scale / n)
    calls = prof.get("calls", [])
    transport = sum(count for name, count in calls if name in TRANSPORT_CALLS)
    serving = [(name, count) for name, count in calls if name not in TRANSPORT_CALLS]
    return [f"{n:.0f}", each("cpu_ms", 1000.0, "{:.0f}"), each("syscalls"),
            f"{transport / n:.1f}",
            f"{sum(c for _, c in serving) / n:.2f}: "
            + ", ".join(f"{name} {count / n:.2f}" for name, count in serving[:6]),
            each("context_switches")]
