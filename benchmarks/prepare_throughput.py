"""Measure the throughput, CPU time and peak memory of ``modalbalance prepare`` on synthetic CREMA-D clips.

Writes ``--clips`` CREMA-D-format clips, each a 16 kHz WAV and a 480x360 FLV
video of ``--duration`` seconds, all copies of one ffmpeg test pattern. Then it
prepares them once per ``--workers`` value, each time in a new process and
into a fresh output directory, and prints clips per second, CPU seconds per
clip and peak memory. Needs ffmpeg.

    python benchmarks/prepare_throughput.py --clips 200 --workers 1 2

Memory and CPU are measured in two ways:

- ``resource.getrusage`` of this process (``self``) and of the child processes
  it has waited for (``children``). ``ru_maxrss`` of children is the largest
  single child, not a sum, and a child started by fork or vfork inherits its
  parent's resident size until it calls exec. Worker processes are children of
  multiprocessing's forkserver, not of this process, so getrusage misses them.
- Sampling ``/proc`` (Linux only) every 0.1 s. Memory is the sum of the
  proportional set size (PSS, shared pages divided among their users) of this
  process and all its descendants. CPU time adds that of the Python
  descendants, which includes the ffmpeg processes they waited for, and leaves
  out the sampling thread. Sampling misses up to 0.1 s per process.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from modalbalance.data.prepare import FrameSettings, prepare_dataset
from modalbalance.data.synthetic_media import cremad_clip_ids, write_cremad_raw

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PROC = Path("/proc")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=200, help="number of synthetic clips (default: 200)")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[os.cpu_count() or 1], help="worker counts to measure (default: the number of CPUs)"
    )
    parser.add_argument("--duration", type=float, default=3.0, help="clip length in seconds (default: 3, a typical CREMA-D clip)")
    parser.add_argument("--frame-size", type=int, default=224, help="side of the square frames in pixels (default: 224)")
    parser.add_argument("--workdir", type=Path, help="directory for the raw and prepared files (default: a temporary directory)")
    parser.add_argument("--raw", type=Path, help="an existing raw CREMA-D directory, with train.csv and test.csv, to prepare instead of synthetic clips")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # one measurement, in a child process
    return parser.parse_args(argv)


def _read_stat(pid: int) -> tuple[str, int, float, float] | None:
    """Return ``(command, parent pid, own CPU s, CPU s of waited-for children)``, or None once the process exited."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces; the other fields follow the last ")".
    command = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    parent = int(fields[1])
    utime, stime, children_utime, children_stime = (int(value) for value in fields[11:15])
    return command, parent, (utime + stime) / CLOCK_TICKS, (children_utime + children_stime) / CLOCK_TICKS


def _read_pss_kib(pid: int) -> int:
    try:
        for line in (PROC / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class ProcessTreeSampler(threading.Thread):
    """Samples the total PSS of this process tree and the CPU time of its Python descendants."""

    def __init__(self, interval_s: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.peak_pss_kib = 0
        # pid -> (parent pid, own CPU s, waited-for children's CPU s) of Python descendants, at the latest sample.
        self.python_descendants: dict[int, tuple[int, float, float]] = {}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval_s)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.sample()

    def sample(self) -> None:
        if not PROC.is_dir():
            return
        stats = {}
        for entry in PROC.iterdir():
            if entry.name.isdigit():
                stat = _read_stat(int(entry.name))
                if stat is not None:
                    stats[int(entry.name)] = stat
        tree = {os.getpid()}
        # Parents have lower pids only by chance, so repeat until no new descendant is found.
        grew = True
        while grew:
            grew = False
            for pid, (_, parent, _, _) in stats.items():
                if parent in tree and pid not in tree:
                    tree.add(pid)
                    grew = True
        self.peak_pss_kib = max(self.peak_pss_kib, sum(_read_pss_kib(pid) for pid in tree))
        for pid in tree - {os.getpid()}:
            command, parent, own_s, children_s = stats[pid]
            if command.startswith("python"):
                self.python_descendants[pid] = (parent, own_s, children_s)

    def descendant_cpu_s(self) -> float:
        """Return the CPU time of the Python descendants and of the ffmpeg processes they waited for.

        A Python process's waited-for children count only when none of them is a
        tracked Python process. The forkserver waits for the workers, so its
        children's time would count the workers twice.
        """
        parents_of_python = {parent for parent, _, _ in self.python_descendants.values()}
        total = 0.0
        for pid, (_, own_s, children_s) in self.python_descendants.items():
            total += own_s if pid in parents_of_python else own_s + children_s
        return total


def _main_thread_cpu_s() -> float:
    """Return the CPU time of this thread and of the processes this process waited for.

    The sampler thread's own CPU time is left out, because it is measurement overhead.
    """
    this_thread = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)
    usage = [resource.getrusage(target) for target in (this_thread, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def peak_rss_mib(target: int) -> float:
    """Return the peak RSS in MiB of ``resource.RUSAGE_SELF`` or ``resource.RUSAGE_CHILDREN``."""
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(target).ru_maxrss / 1024


def measure(raw: Path, out: Path, workers: int, frames: FrameSettings) -> str:
    """Prepare ``raw`` into ``out`` and return a one-line summary; run it in a fresh process for clean numbers."""
    sampler = ProcessTreeSampler()
    cpu_before = _main_thread_cpu_s()
    started = time.perf_counter()
    sampler.start()
    report = prepare_dataset("cremad", raw, out, workers=workers, frames=frames, progress=False)
    elapsed = time.perf_counter() - started
    sampler.stop()
    cpu_s = _main_thread_cpu_s() - cpu_before + sampler.descendant_cpu_s()

    prepared = max(report.prepared, 1)
    return (
        f"workers {workers}: {report.prepared} clips in {elapsed:.1f} s = {report.prepared / elapsed:.2f} clips/s, "
        f"{cpu_s / prepared:.2f} CPU s per clip; {report.failed} failed; "
        f"peak PSS of the process tree (sampled) {sampler.peak_pss_kib / 1024:.0f} MiB; "
        f"getrusage peak RSS: self {peak_rss_mib(resource.RUSAGE_SELF):.0f} MiB, "
        f"largest waited-for child {peak_rss_mib(resource.RUSAGE_CHILDREN):.0f} MiB"
    )


def run(args: argparse.Namespace, workdir: Path) -> None:
    raw = args.raw
    if raw is None:
        raw = workdir / "raw"
        started = time.perf_counter()
        write_cremad_raw(raw, cremad_clip_ids(args.clips), [], duration_s=args.duration, copy_first=True, video_size=(480, 360))
        print(f"wrote {args.clips} clips of {args.duration:.1f} s in {time.perf_counter() - started:.1f} s")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, load average {load:.1f}")

    # Each measurement runs in a new process, so that the multiprocessing forkserver, the peak
    # memory and the CPU counters of one worker count do not carry over to the next.
    for workers in args.workers:
        command = [sys.executable, __file__, "--measure", "--raw", str(raw), "--workers", str(workers)]
        command += ["--frame-size", str(args.frame_size), "--workdir", str(workdir / f"out_workers{workers}")]
        sys.stdout.flush()
        subprocess.run(command, check=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.measure:
        print(measure(args.raw, args.workdir, args.workers[0], FrameSettings(size=args.frame_size)), flush=True)
        return 0
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        run(args, args.workdir)
        return 0
    with tempfile.TemporaryDirectory(prefix="prepare_benchmark_") as workdir:
        run(args, Path(workdir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
