"""The user unit under a real systemd: ``thumbdrop service install --user`` against a user manager.

The test starts its own ``systemd --user`` (the same binary as on a Debian desktop, not PID 1, in the test's
HOME and XDG_RUNTIME_DIR) and drives it with ``systemctl --user``. That checks what a NOTIFY_SOCKET made by a
test cannot: that systemd itself takes the unit file, marks the service active only after READY=1, shows our
STATUS= line, keeps it running through a reload with a broken config, and sees a clean exit 0 on stop.

systemd refuses ``--user`` unless the machine "was booted with systemd" (``/run/systemd/system`` exists). In a
container as root the test creates that directory for its own duration and removes it afterwards; without root,
systemd or cgroup access the test is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import E2EEnv, make_image, wait_for

SYSTEMD = next((p for p in ("/lib/systemd/systemd", "/usr/lib/systemd/systemd") if os.access(p, os.X_OK)), None)
BOOTED = Path("/run/systemd/system")


@dataclass
class UserManager:
    env: dict[str, str]
    log: Path
    out: Path  # the service's stdout and stderr (no journald here)

    def ctl(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(
            ["systemctl", "--user", "--no-pager", *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        if check and done.returncode != 0:
            raise AssertionError(f"systemctl --user {' '.join(args)} exited {done.returncode}: {done.stderr}{self.logs()}")
        return done.stdout

    def show(self) -> dict[str, str]:
        out = self.ctl("show", "thumbdrop", "-p", "ActiveState,SubState,StatusText,MainPID,Result,ExecMainStatus")
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def logs(self) -> str:
        parts = [f"\n--- {p.name} ---\n{p.read_text(errors='replace')[-4000:]}" for p in (self.log, self.out) if p.exists()]
        return "".join(parts)


@pytest.fixture()
def user_manager(e2e: E2EEnv) -> Iterator[UserManager]:
    if SYSTEMD is None or shutil.which("systemctl") is None:
        pytest.skip("needs systemd installed (apt-get install systemd; .ci/install-service-deps.sh does it)")
    created = False
    if not BOOTED.is_dir():
        if os.geteuid() != 0:
            pytest.skip(f"systemd --user needs {BOOTED} to exist, and only root can create it here")
        BOOTED.mkdir(parents=True)
        created = True
    env = {**e2e.env, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    manager = UserManager(env, e2e.root / "systemd-user.log", e2e.root / "service.out")
    proc = None
    try:
        with open(manager.log, "wb") as log:
            proc = subprocess.Popen(
                [SYSTEMD, "--user", "--log-target=console"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

        def up() -> bool:
            if proc.poll() is not None:
                pytest.skip(f"systemd --user cannot run here (exit {proc.returncode}){manager.logs()}")
            state = manager.ctl("is-system-running", check=False).strip()
            return state in ("running", "degraded")

        wait_for(up, 30, "systemd --user to start")
        yield manager
    finally:
        if proc is not None:
            with contextlib.suppress(Exception):
                manager.ctl("stop", "thumbdrop", check=False)
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if created:
            with contextlib.suppress(OSError):
                BOOTED.rmdir()


def test_user_unit_runs_under_systemd_and_survives_a_broken_reload(e2e: E2EEnv, user_manager: UserManager) -> None:
    # No journald in a container: the service's output goes to a file, through a drop-in written before install.
    dropin = e2e.home / ".config" / "systemd" / "user" / "thumbdrop.service.d"
    dropin.mkdir(parents=True)
    (dropin / "output.conf").write_text(
        f"[Service]\nStandardOutput=append:{user_manager.out}\nStandardError=append:{user_manager.out}\n"
    )

    installed = e2e.cli("service", "install", "--user")
    assert installed.rc == 0, installed
    assert "enabled and started" in installed.stdout, installed
    unit = (e2e.home / ".config" / "systemd" / "user" / "thumbdrop.service").read_text()
    assert "Type=notify" in unit and str(e2e.config_path) in unit

    # Type=notify: systemd reports "active (running)" only once the agent has sent READY=1.
    def ready() -> bool:
        s = user_manager.show()
        assert s["ActiveState"] in ("activating", "active"), f"{s}{user_manager.logs()}"
        return s["ActiveState"] == "active" and s["StatusText"].startswith("running")

    wait_for(ready, 60, "the service to report READY", user_manager.logs)
    pid = user_manager.show()["MainPID"]

    make_image(e2e.inbox / "first.jpg", (800, 600))
    wait_for(lambda: (e2e.thumbs / "first.jpg").is_file(), 60, "the first thumbnail", user_manager.logs)
    wait_for(lambda: "1 thumbnailed" in user_manager.show()["StatusText"], 30, "STATUS= to count it", user_manager.logs)

    # A broken config and `systemctl reload`: the same process keeps running on the previous config.
    good = e2e.config_path.read_text()
    e2e.config_path.write_text(good + "watch_typo: 1\nthumbnails: {sizes: [0]}\n")
    user_manager.ctl("reload", "thumbdrop")
    wait_for(lambda: "still running with the previous config" in user_manager.out.read_text(), 20, "the refused reload")
    out = user_manager.out.read_text()
    assert "watch_typo: unknown key" in out and "thumbnails.sizes" in out, out
    time.sleep(1)
    after = user_manager.show()
    assert after["ActiveState"] == "active" and after["MainPID"] == pid, f"{after}{user_manager.logs()}"
    make_image(e2e.inbox / "second.jpg", (600, 800))
    wait_for(lambda: (e2e.thumbs / "second.jpg").is_file(), 60, "a thumbnail after the refused reload", user_manager.logs)

    # Stop: drained, exit 0, and systemd calls that a success.
    e2e.config_path.write_text(good)
    user_manager.ctl("stop", "thumbdrop")
    stopped = user_manager.show()
    assert stopped["ActiveState"] == "inactive" and stopped["Result"] == "success", f"{stopped}{user_manager.logs()}"
    assert stopped["ExecMainStatus"] == "0", stopped
    assert "thumbdrop agent stopped" in user_manager.out.read_text()
