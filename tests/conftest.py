"""Shared test set-up: no hub access, few threads, deterministic."""

import os
import signal
import subprocess

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(2)


import pytest  # noqa: E402



def in_ci() -> bool:
    """CI runs `.ci/run` with CI set (CI=true): there every test must run."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI a skipped test is a failure naming the skip's reason (a missing browser, milvus-lite,
    ...): CI installs everything the suite needs, so a skip there is a broken install."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and in_ci() and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every test must run: {reason}"


TINY_MODEL = [
    "data.dataset=SynthPEDES", "data.image_size=[64, 32]", "data.batch_size=8", "data.instances_per_id=2",
    "data.num_workers=0", "data.max_tokens=24",
    "model.image_backbone=small_cnn", "model.image_width=32", "model.text_backbone=bert",
    "model.text_weights=random", "model.text_width=32", "model.text_layers=1", "model.dim=32",
    "model.num_coarse=2", "model.num_fine=2", "model.encoder_heads=4", "model.decoder_heads=4",
    "model.decoder_layers=1", "train.epochs=1", "train.warmup_epochs=0", "train.device=cpu",
]


@pytest.fixture(scope="session")
def tiny_overrides() -> list[str]:
    """Config overrides for a tiny end-to-end model on a tiny SynthPEDES (seconds on 2 cores);
    tests append their own overrides, and a later value for the same key wins."""
    return list(TINY_MODEL)


@pytest.fixture
def kill_at_pause():
    """`kill(argv, marker, env)`: run `argv`, wait until its stderr prints `marker` (the process
    pauses there), then SIGKILL it, as a crash would; fails if it ends before the marker."""

    def kill(argv: list[str], marker: str, env: dict[str, str]) -> None:
        proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
        try:
            for line in proc.stderr:
                if marker in line:
                    break
            else:
                raise AssertionError(f"the process ended before printing {marker!r} (exit {proc.wait()})")
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
        finally:
            proc.kill()
            proc.stderr.close()

    return kill
