"""bench.procstat: a JVM's JIT compiler threads are counted apart from the rest of the process."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from bench.procstat import JIT_SUFFIX, cpu_delta, snapshot, steady_cpu

HOT = """
public class Hot {
    public static void main(String[] a) throws Exception {
        long end = System.nanoTime() + 60_000_000_000L, x = 0;
        while (System.nanoTime() < end) { for (int i = 0; i < 1000; i++) x += i * 31 ^ (x >>> 3); }
        System.out.println(x);
    }
}
"""


def test_a_python_process_has_no_jit_entry() -> None:
    me = {"me": os.getpid()}
    before = snapshot(me)
    sum(i * i for i in range(200_000))
    delta = cpu_delta(before, snapshot(me))
    assert set(delta) == {"me"}
    assert steady_cpu(delta) == delta["me"]


@pytest.mark.skipif(shutil.which("java") is None, reason="no JVM on this machine")
def test_a_jvms_compiler_threads_are_a_process_of_their_own(tmp_path: Path) -> None:
    src = tmp_path / "Hot.java"
    src.write_text(HOT)
    proc = subprocess.Popen(["java", str(src)], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        before = snapshot({"jvm": proc.pid})
        # Compiling the single-file source, then the hot loop: read until both show, as long as a busy
        # machine needs (a fixed 2.5 s failed under CI load: the JVM had not had 0.5 s of CPU yet).
        deadline = time.monotonic() + 60
        while True:
            time.sleep(0.5)
            after = snapshot({"jvm": proc.pid})
            delta = cpu_delta(before, after)
            if (delta.get("jvm" + JIT_SUFFIX, 0) > 0 and delta["jvm"] > 0.5) or time.monotonic() > deadline:
                break
    finally:
        proc.kill()
        proc.wait()
    assert set(delta) == {"jvm", "jvm" + JIT_SUFFIX}
    assert delta["jvm" + JIT_SUFFIX] > 0  # javac's and the loop's methods were compiled
    assert delta["jvm"] > 0.5  # the loop itself, not counted twice
    assert steady_cpu(delta) == pytest.approx(delta["jvm"])
    assert after["jvm"].jit_seconds >= before["jvm"].jit_seconds
