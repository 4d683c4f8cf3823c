"""A big upload over a slow link, SIGKILLed at random points several times: each restart sends again at most
the parts that were in flight when it was killed, and the object is complete and correct in the end.

``THUMBDROP_TEST_SEED`` replays the same kill times; ``THUMBDROP_TEST_RESUME_KILLS`` sets how many (default 4).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from agent.pipeline.multipart import PARTS_IN_FLIGHT_CAPPED
from tests.support import wait_for

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("THUMBDROP_TEST_SEED", "20261201"))
KILLS = int(os.environ.get("THUMBDROP_TEST_RESUME_KILLS", "4"))
PART = 5 << 20
PARTS = 12
RATE = "10MB/s"  # the whole file takes ~6.3 s: long enough to be killed in the middle several times


def parse(log: Path, pid: int) -> tuple[set[int], set[int], str | None]:
    started, done, result = set(), set(), None
    for line in log.read_text().splitlines():
        who, what, arg = line.split()
        if int(who) != pid:
            continue
        if what == "start":
            started.add(int(arg))
        elif what == "done":
            done.add(int(arg))
        else:
            result = arg
    return started, done, result


def test_sigkilled_big_upload_resends_only_parts_in_flight(moto_url: str, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    print(f"seed {SEED}")
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t")
    s3.create_bucket(Bucket="resume-kill")
    folder, state, log = tmp_path / "inbox", tmp_path / "state", tmp_path / "parts.log"
    folder.mkdir()
    data = os.urandom(PARTS * PART - 12345)
    (folder / "big.mov").write_bytes(data)
    env = {**os.environ, "PYTHONPATH": str(REPO), "AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t"}
    args = [sys.executable, "-m", "tests.reliability.resumable_child", moto_url, str(folder), str(state), str(log), RATE]

    ever_started: set[int] = set()
    previous_in_flight: set[int] = set()
    resent_bytes: list[int] = []
    for trial in range(KILLS + 1):
        child = subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            if trial < KILLS:
                # Killed at a random point once it is sending (0.2-2 s into its parts), whatever it is doing.
                pid, proc = child.pid, child
                wait_for(
                    lambda: (log.exists() and parse(log, pid)[0]) or proc.poll() is not None,  # noqa: B023
                    60,
                    "the first part to start",
                )
                time.sleep(rng.uniform(0.2, 2.0))
                child.send_signal(signal.SIGKILL)  # a no-op if it already finished (no part left to send)
            out, _ = child.communicate(timeout=120)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        started, done, result = parse(log, child.pid)
        again = started & ever_started
        # In flight at the previous kill = started then, not confirmed then: under a cap one part at a time.
        assert len(again) <= PARTS_IN_FLIGHT_CAPPED, (trial, sorted(again))
        assert again <= previous_in_flight, (trial, sorted(again), sorted(previous_in_flight))
        resent_bytes.append(len(again) * PART)
        print(f"run {trial}: sent parts {sorted(started)}, confirmed {sorted(done)}, sent again {sorted(again)}")
        previous_in_flight = started - done
        ever_started |= started
        if result is not None or trial == KILLS:
            # Done: it may still have been killed on its way out, after it logged the result.
            assert result == "uploaded" and child.returncode in (0, -signal.SIGKILL), out.decode(errors="replace")[-3000:]
            break
    print(f"bytes sent again after each restart: {resent_bytes[1:]} (part size {PART})")
    body = s3.get_object(Bucket="resume-kill", Key="big.mov")["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    assert s3.list_multipart_uploads(Bucket="resume-kill").get("Uploads", []) == []
    head = s3.head_object(Bucket="resume-kill", Key="big.mov")
    assert head["ContentType"] == "video/quicktime"
    assert head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
