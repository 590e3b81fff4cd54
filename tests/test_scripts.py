"""The accuracy study's data scripts: the parts that decide what is measured, without their heavy imports."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # top level imports numpy only; torch, PIL etc. load inside functions
    return module


def test_effnet_photo_split_is_disjoint_and_deterministic():
    e = load("export_efficientnet_lite0")
    debian = {Path(p).name for paths in e.DEBIAN_PHOTOS.values() for p in paths}
    assert len(debian) == sum(len(p) for p in e.DEBIAN_PHOTOS.values()) == 30  # no name twice
    python_photos = ["astronaut", "chelsea", "coffee", "rocket", "coins", "china.jpg", "flower.jpg", "grace_hopper"]
    assert not debian & set(python_photos)
    imgs = {name: np.full((2, 2, 3), i, np.uint8) for i, name in enumerate(sorted(debian | set(python_photos)))}
    calib, evals = e.split(imgs, debian)
    ids = {int(a[0, 0, 0]) for a in calib}, {int(a[0, 0, 0]) for a in evals}
    assert not ids[0] & ids[1] and len(ids[0]) + len(ids[1]) == len(imgs)
    names = sorted(imgs)
    eval_names = {names[i] for i in ids[1]}
    assert eval_names == (e.EVAL_PHOTOS & set(imgs)) | set(sorted(debian)[1::2])  # every second Debian photo
    assert len(eval_names & debian) == 15
    assert [int(a[0, 0, 0]) for a in e.split(imgs, debian)[1]] == [int(a[0, 0, 0]) for a in evals]  # same order
    # without the Debian photos: the first photo set's split, by EVAL_PHOTOS alone
    first = {k: v for k, v in imgs.items() if k not in debian}
    _, evals1 = e.split(first, set())
    assert {names[int(a[0, 0, 0])] for a in evals1} == e.EVAL_PHOTOS & set(first)
