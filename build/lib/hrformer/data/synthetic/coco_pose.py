"""Synthetic top-down human pose data written in exactly the COCO person-keypoints format.

Layout under ``root`` (same as a real COCO download)::

    images/train2017/000000000001.jpg ...
    images/val2017/000001000001.jpg ...
    annotations/person_keypoints_train2017.json
    annotations/person_keypoints_val2017.json
    .synthetic.json            # marker with the generation parameters, written last

Every image holds 1-4 procedurally articulated people with volume (head ellipsoid with face, hair and ears,
neck, 3D torso hull, tapered limb capsules, hands, shoes), drawn with a painter's algorithm in 3D (yaw,
in-plane roll, camera pitch) and orthographic projection, so left/right is anatomically consistent: a person
facing the camera has the left shoulder on the image right, a person seen from the back on the image left.
The cues that tell front from back are mirror-symmetric (face, collar, hair, toes pointing forward, far-side
parts shaded darker), on purpose: a horizontal flip of an image is again a valid image with left/right
labels swapped, as on real photographs. A marker on the left limbs (a chirality cue) would instead be
contradicted by the flip augmentation.

Annotation conventions (as COCO):

- ``keypoints``: 17 x (x, y, v) in pixel-index coordinates (pixel centres at integers, the frame
  ``cv2.warpAffine`` and the usual top-down pipelines assume); v=2 visible, v=1 labelled but hidden (by an
  occluder, another person or the person's own body; also the far ear in profile), v=0 not labelled with
  x=y=0 (outside the image, or nose/eyes of a person seen from the back, which COCO annotators usually leave
  out). ``num_keypoints`` = count of v > 0.
- ``segmentation``: polygons tracing the pixel edges of the *visible* silhouette (after occlusion by later
  people and occluders), so ``annToMask`` reproduces the visible mask exactly (enclosed holes are filled, as
  polygons cannot represent them). ``area`` is the area of that segmentation and ``bbox`` its tight box, as
  in COCO.
- People whose visible segment area is below 32^2 px (COCO's "small") are annotated with ``num_keypoints`` 0
  and all-zero keypoints, as in COCO, where small people carry no keypoint labels; so are the small
  background people (about 15-35 px tall).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from . import common

__all__ = [
    "KEYPOINT_NAMES",
    "SKELETON",
    "FLIP_PAIRS",
    "generate_coco_pose",
    "ensure_synthetic_coco_pose",
]

GENERATOR_VERSION = 3
SPLITS = ("train2017", "val2017")
VAL_ID_OFFSET = 1_000_000  # image ids are unique over both splits, as in COCO
JPEG_QUALITY = 90
# COCO leaves small people (segment area < 32^2) without keypoints (num_keypoints 0); so does this generator
MIN_KEYPOINT_AREA = 32.0**2

KEYPOINT_NAMES = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
    "right_knee", "left_ankle", "right_ankle",
]
# 1-based, exactly as in person_keypoints_*.json
SKELETON = [
    [16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8], [7, 9], [8, 10],
    [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7],
]
FLIP_PAIRS = [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)]
PERSON_CATEGORY = {
    "supercategory": "person", "id": 1, "name": "person", "keypoints": KEYPOINT_NAMES, "skeleton": SKELETON,
}

# ----------------------------------------------------------------------------------------------------------
# geometry helpers. Camera frame (OpenCV): x right, y down, z into the scene (larger z = farther). The body
# frame is the same right-handed frame for a person facing the camera: x = the person's left, y = down,
# z = backward. Only proper rotations are applied, never reflections, so left/right stays anatomical.
# ----------------------------------------------------------------------------------------------------------


def _rx(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _ry(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rz(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


_DEG = math.pi / 180.0
_DOWN = np.array([0.0, 1.0, 0.0])
_CIRCLE = np.stack([np.cos(np.linspace(0, 2 * np.pi, 20, endpoint=False)),
                    np.sin(np.linspace(0, 2 * np.pi, 20, endpoint=False))], 1)

# part indices (label map: 1 + 32 * person + part)
(P_TORSO, P_NECK, P_HEAD, P_UARM_L, P_UARM_R, P_FARM_L, P_FARM_R, P_HAND_L, P_HAND_R, P_THIGH_L, P_THIGH_R,
 P_SHANK_L, P_SHANK_R, P_FOOT_L, P_FOOT_R) = range(15)
_OWNERS = [
    {P_HEAD}, {P_HEAD}, {P_HEAD}, {P_HEAD}, {P_HEAD},
    {P_TORSO, P_UARM_L}, {P_TORSO, P_UARM_R},
    {P_UARM_L, P_FARM_L}, {P_UARM_R, P_FARM_R},
    {P_FARM_L, P_HAND_L}, {P_FARM_R, P_HAND_R},
    {P_TORSO, P_THIGH_L}, {P_TORSO, P_THIGH_R},
    {P_THIGH_L, P_SHANK_L}, {P_THIGH_R, P_SHANK_R},
    {P_SHANK_L, P_FOOT_L}, {P_SHANK_R, P_FOOT_R},
]
_PARTS_PER_PERSON = 32
_OCCLUDER_CODE = 60000

_SKIN = np.array([[200, 215, 245], [170, 195, 235], [140, 170, 220], [110, 145, 200], [80, 110, 165],
                  [55, 80, 125], [40, 55, 90], [150, 180, 225]], dtype=np.float64)  # BGR
_HAIR = np.array([[20, 20, 25], [30, 45, 70], [40, 70, 110], [90, 150, 200], [150, 150, 155], [25, 35, 50],
                  [60, 90, 140]], dtype=np.float64)


@dataclass
class _Prim:
    """One convex polygon of a person (camera-frame depth for the painter's order) plus decorations on top."""

    depth: float
    part: int
    pts: np.ndarray  # (N, 2) image coordinates, after placement
    color: tuple
    decor: list = field(default_factory=list)  # [(pts, color)], drawn with the same part label


@dataclass
class _Person:
    kpts: np.ndarray  # (17, 2) image coordinates
    self_vis: np.ndarray  # (17,) 2 = may be visible, 1 = self-occluded (labelled), 0 = not labelled
    prims: list
    height_px: float
    labelled: bool = True


def _clip255(c) -> tuple:
    return tuple(float(v) for v in np.clip(np.asarray(c, dtype=np.float64), 0, 255))


def _random_color(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> np.ndarray:
    return rng.integers(lo, hi, 3).astype(np.float64)


def _capsule_2d(p0: np.ndarray, p1: np.ndarray, r0: float, r1: float) -> np.ndarray:
    pts = np.concatenate([p0 + r0 * _CIRCLE, p1 + r1 * _CIRCLE]).astype(np.float32)
    return cv2.convexHull(pts).reshape(-1, 2).astype(np.float64)


def _ellipsoid_2d(center3: np.ndarray, rot: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """Outline of the orthographic projection of an ellipsoid (2x2 block of R diag(axes^2) R^T)."""
    cov = (rot * axes**2) @ rot.T
    w, v = np.linalg.eigh(cov[:2, :2])
    return center3[:2] + (_CIRCLE * np.sqrt(np.maximum(w, 1e-12))) @ v.T


def _hull_2d(pts3: np.ndarray) -> np.ndarray:
    return cv2.convexHull(pts3[:, :2].astype(np.float32)).reshape(-1, 2).astype(np.float64)


def _facing(rot: np.ndarray, normal) -> float:
    """How much a surface normal (in the part's own frame) points to the camera (-z): 1 facing it, -1 away."""
    n = rot @ np.asarray(normal, dtype=np.float64)
    return float(-n[2] / (np.linalg.norm(n) + 1e-12))


# ----------------------------------------------------------------------------------------------------------
# the articulated figure
# ----------------------------------------------------------------------------------------------------------


def _sample_arm(rng: np.random.Generator) -> tuple[float, float, float, float]:
    """(flexion, abduction, twist, elbow) in degrees."""
    mode = rng.choice(4, p=[0.4, 0.25, 0.2, 0.15])
    if mode == 0:  # hanging, relaxed
        return rng.uniform(-25, 35), rng.uniform(3, 30), rng.uniform(-20, 60), rng.uniform(0, 60)
    if mode == 1:  # bent, holding / hands on hips
        return rng.uniform(-30, 70), rng.uniform(5, 60), rng.uniform(0, 90), rng.uniform(60, 145)
    if mode == 2:  # raised sideways / overhead
        return rng.uniform(-20, 40), rng.uniform(60, 175), rng.uniform(-40, 60), rng.uniform(0, 120)
    # reaching forward
    return rng.uniform(60, 130), rng.uniform(0, 40), rng.uniform(-30, 60), rng.uniform(0, 100)


def _sample_legs(rng: np.random.Generator) -> list[tuple[float, float, float]]:
    """[(hip flexion, hip abduction, knee flexion)] for left and right, in degrees."""
    mode = rng.choice(5, p=[0.35, 0.3, 0.12, 0.13, 0.1])
    if mode == 0:  # standing
        legs = [(rng.uniform(-8, 15), rng.uniform(0, 14), rng.uniform(0, 15)) for _ in range(2)]
    elif mode == 1:  # walking / running
        stride = rng.uniform(10, 40)
        legs = [(stride * rng.uniform(0.6, 1.1), rng.uniform(0, 8), rng.uniform(0, 35)),
                (-stride * rng.uniform(0.4, 0.9), rng.uniform(0, 8), rng.uniform(5, 80))]
        if rng.random() < 0.5:
            legs = legs[::-1]
    elif mode == 2:  # one knee on the ground
        legs = [(rng.uniform(70, 100), rng.uniform(0, 15), rng.uniform(75, 105)),
                (rng.uniform(-15, 15), rng.uniform(0, 15), rng.uniform(80, 110))]
        if rng.random() < 0.5:
            legs = legs[::-1]
    elif mode == 3:  # crouching / sitting-ish
        legs = [(rng.uniform(50, 110), rng.uniform(5, 30), rng.uniform(60, 130)) for _ in range(2)]
    else:  # wide stance / lunge
        legs = [(rng.uniform(-20, 50), rng.uniform(10, 40), rng.uniform(0, 70)) for _ in range(2)]
    return legs


def _sample_view(rng: np.random.Generator) -> tuple[float, float, float]:
    """(yaw, roll, pitch) of the whole body, degrees. Yaw 0 faces the camera, 180 shows the back."""
    u = rng.random()
    if u < 0.6:
        yaw = rng.uniform(-60, 60)
    elif u < 0.85:
        yaw = 180 + rng.uniform(-60, 60)
    else:
        yaw = rng.uniform(-180, 180)
    roll = float(np.clip(rng.normal(0, 7), -22, 22))
    if rng.random() < 0.03:
        roll = rng.uniform(-90, 90)
    return yaw, roll, rng.uniform(-12, 12)


def _build_person(rng: np.random.Generator, labelled: bool = True, view: tuple | None = None) -> _Person:
    """Sample proportions, pose, view and clothing; the figure in body-height units, pelvis at the origin."""
    j = lambda: rng.uniform(0.93, 1.07)  # noqa: E731 - length jitter
    build = rng.uniform(0.85, 1.2)
    g = lambda: build * rng.uniform(0.9, 1.1)  # noqa: E731 - girth jitter
    hip_w, sh_w = 0.085 * g(), 0.12 * g()
    torso_len, neck_len = 0.30 * j(), 0.115 * j()
    l_uarm, l_farm, l_hand = 0.175 * j(), 0.152 * j(), 0.05 * j()
    l_thigh, l_shank = 0.245 * j(), 0.245 * j()
    head_axes = np.array([0.05, 0.066, 0.058]) * rng.uniform(0.92, 1.08)
    r_neck = 0.03 * g()
    r_uarm, r_farm, r_hand = 0.036 * g(), 0.028 * g(), 0.024 * g()
    r_thigh, r_shank, r_foot = 0.06 * g(), 0.043 * g(), 0.024 * g()

    yaw, roll, pitch = view if view is not None else _sample_view(rng)
    r_glob = _rz(roll * _DEG) @ _rx(pitch * _DEG) @ _ry(yaw * _DEG)
    r_spine = r_glob @ _rx(rng.uniform(-8, 30) * _DEG) @ _rz(rng.uniform(-10, 10) * _DEG) @ _ry(
        rng.uniform(-15, 15) * _DEG)
    r_head = r_spine @ _ry(rng.uniform(-35, 35) * _DEG) @ _rx(rng.uniform(-20, 25) * _DEG) @ _rz(
        rng.uniform(-15, 15) * _DEG)

    neck_base = r_spine @ np.array([0.0, -torso_len, 0.0])
    head_c = neck_base + r_head @ np.array([0.0, -neck_len, -0.01])
    kp = np.zeros((17, 3))
    # face keypoints in the head frame; normals decide whether they face the camera
    ha = head_axes
    face_pts = [np.array([0.0, 0.012, -ha[2] * 1.08]), np.array([ha[0] * 0.4, -0.008, -ha[2] * 0.9]),
                np.array([-ha[0] * 0.4, -0.008, -ha[2] * 0.9]), np.array([ha[0] * 0.98, 0.004, 0.004]),
                np.array([-ha[0] * 0.98, 0.004, 0.004])]
    face_normals = [(0, 0.1, -1), (0.45, 0, -1), (-0.45, 0, -1), (1, 0, 0.15), (-1, 0, 0.15)]
    self_vis = np.full(17, 2, dtype=np.int64)
    face_facing = []
    for i in range(5):
        kp[i] = head_c + r_head @ face_pts[i]
        f = _facing(r_head, face_normals[i])
        face_facing.append(f)
        if i < 3:
            self_vis[i] = 0 if f < -0.2 else (1 if f < 0.1 else 2)
        else:
            self_vis[i] = 1 if f < -0.4 else 2

    prims3: list[tuple] = []  # (depth, part, 2D outline, color, decor)

    # clothing
    skin = _SKIN[rng.integers(len(_SKIN))] + rng.normal(0, 8, 3)
    hair = _HAIR[rng.integers(len(_HAIR))] + rng.normal(0, 8, 3)
    shirt = _random_color(rng)
    pants = _random_color(rng, 0, 200) if rng.random() < 0.8 else _random_color(rng)
    shoes = _random_color(rng, 0, 120)
    collar = skin if rng.random() < 0.5 else 255 - shirt * rng.uniform(0.5, 1.0)
    long_sleeves, long_pants = rng.random() < 0.5, rng.random() < 0.8

    def shade(color: np.ndarray, depth: float) -> tuple:
        # far-side parts darker, near-side parts lighter (mirror-symmetric depth cue)
        return _clip255(color * (1.0 - 1.6 * float(np.clip(depth - torso_depth, -0.06, 0.15))))

    # torso: 3D hull of shoulder/chest/waist/hip points
    up_pts, low_pts = [], []
    for sx in (1.0, -1.0):
        for sz in (1.0, -1.0):
            up_pts.append(neck_base + r_spine @ np.array([sx * (sh_w + 0.018), 0.012, sz * 0.045]))
            up_pts.append(neck_base + r_spine @ np.array([sx * sh_w * 0.92, 0.1, sz * 0.062]))
            waist = r_spine @ np.array([sx * (hip_w + 0.012) * 1.05, -0.09, sz * 0.052])
            up_pts.append(waist)
            low_pts.append(waist)
            low_pts.append(r_glob @ np.array([sx * (hip_w + 0.04), 0.025, sz * 0.06]))
            low_pts.append(r_glob @ np.array([sx * 0.04, 0.085, sz * 0.035]))
    up_pts, low_pts = np.array(up_pts), np.array(low_pts)
    torso_depth = float(np.concatenate([up_pts, low_pts])[:, 2].mean())
    torso_facing = _facing(r_spine, (0, 0, -1))
    decor = [(_hull_2d(low_pts), shade(pants, torso_depth))]
    if torso_facing > 0.12:  # collar / neckline only on the front
        tri = np.array([neck_base + r_spine @ np.array([s * 0.04, 0.0, -0.056]) for s in (1.0, -1.0)]
                       + [neck_base + r_spine @ np.array([0.0, 0.075, -0.064])])
        decor.append((_hull_2d(tri), shade(collar, torso_depth)))
    prims3.append((torso_depth, P_TORSO, _hull_2d(up_pts), shade(shirt, torso_depth), decor))

    # neck
    nd = float((neck_base[2] + head_c[2]) / 2) - 0.005
    neck_top = head_c[:2] * 0.6 + neck_base[:2] * 0.4
    neck = _capsule_2d(neck_base[:2], neck_top, r_neck, r_neck)
    prims3.append((nd, P_NECK, neck, shade(skin * 0.92, nd), []))

    # head: hair ellipsoid behind, face ellipsoid in front, then features that face the camera
    head_facing = _facing(r_head, (0, 0, -1))
    face_c = head_c + r_head @ np.array([0.0, 0.008, -0.01])
    hair_c = head_c + r_head @ np.array([0.0, -0.012, 0.016])
    hair_poly = _ellipsoid_2d(hair_c, r_head, ha * np.array([1.03, 0.98, 0.97]))
    face_poly = _ellipsoid_2d(face_c, r_head, ha * 0.97)
    hd = float(head_c[2]) - 0.01
    hair_col, skin_col = shade(hair, hd), shade(skin, hd)
    head_decor = []
    if rng.random() < 0.3:  # long hair falling on the back: its own polygon, behind neck and torso
        back = np.array([head_c + r_head @ np.array([sx * ha[0] * 0.95, dy, ha[2] * 0.6])
                         for sx in (1.0, -1.0) for dy in (-0.02, 0.11)])
        prims3.append((float(back[:, 2].mean()) + 0.03, P_HEAD, _hull_2d(back), hair_col, []))
    layers = [(hair_poly, hair_col), (face_poly, skin_col)]
    head_decor += layers if head_facing >= 0 else layers[::-1]
    for i in (3, 4):  # ears
        if face_facing[i] > -0.3:
            ear = kp[i, :2] + ha[0] * 0.3 * _CIRCLE * np.array([0.6, 1.0])
            head_decor.append((ear, _clip255(np.array(skin_col) * 0.9)))
    eye_col = _clip255(rng.uniform(10, 50, 3))
    for i in (1, 2):
        if face_facing[i] > 0.1:
            head_decor.append((kp[i, :2] + 0.011 * (0.5 + 0.5 * face_facing[i]) * _CIRCLE, eye_col))
    if face_facing[0] > 0.1:
        mouth = [head_c + r_head @ np.array([s * 0.014, 0.038, -ha[2] * 0.9]) for s in (1.0, -1.0)]
        head_decor.append((_capsule_2d(mouth[0][:2], mouth[1][:2], 0.004, 0.004), _clip255(skin * 0.55)))
    if face_facing[0] > -0.1:
        head_decor.append((kp[0, :2] + 0.01 * _CIRCLE, _clip255(np.array(skin_col) * 0.8)))
    prims3.append((hd, P_HEAD, hair_poly, hair_col, head_decor))

    # limbs
    legs = _sample_legs(rng)
    for side, sx in ((0, 1.0), (1, -1.0)):  # 0 = left (+x in the body frame), 1 = right
        shoulder = neck_base + r_spine @ np.array([sx * sh_w, 0.01, 0.0])
        flex, abd, twist, elbow = _sample_arm(rng)
        r_ua = r_spine @ _rz(-sx * abd * _DEG) @ _rx(-flex * _DEG) @ _ry(sx * twist * _DEG)
        el = shoulder + r_ua @ (_DOWN * l_uarm)
        r_fa = r_ua @ _rx(-elbow * _DEG)
        wr = el + r_fa @ (_DOWN * l_farm)
        hand = wr + r_fa @ (_DOWN * l_hand * 0.6)
        kp[5 + side], kp[7 + side], kp[9 + side] = shoulder, el, wr
        sleeve = shirt
        d = float(shoulder[2] + el[2]) / 2 - 0.02
        prims3.append((d, P_UARM_L + side, _capsule_2d(shoulder[:2], el[:2], r_uarm, r_uarm * 0.85),
                       shade(sleeve, d), []))
        d = float(el[2] + wr[2]) / 2 - 0.02
        prims3.append((d, P_FARM_L + side, _capsule_2d(el[:2], wr[:2], r_farm, r_farm * 0.78),
                       shade(sleeve if long_sleeves else skin, d), []))
        d = float(hand[2]) - 0.021
        hand_poly = _capsule_2d(wr[:2], hand[:2], r_hand * 0.9, r_hand)
        prims3.append((d, P_HAND_L + side, hand_poly, shade(skin, d), []))

        hip = r_glob @ np.array([sx * hip_w, 0.0, 0.0])
        hflex, habd, knee = legs[side]
        r_th = r_glob @ _rz(-sx * habd * _DEG) @ _rx(-hflex * _DEG) @ _ry(sx * rng.uniform(-10, 25) * _DEG)
        kn = hip + r_th @ (_DOWN * l_thigh)
        r_sh = r_th @ _rx(knee * _DEG)
        an = kn + r_sh @ (_DOWN * l_shank)
        toe = an + r_sh @ np.array([0.0, 0.03, -0.085])
        kp[11 + side], kp[13 + side], kp[15 + side] = hip, kn, an
        d = float(hip[2] + kn[2]) / 2 - 0.02
        prims3.append((d, P_THIGH_L + side, _capsule_2d(hip[:2], kn[:2], r_thigh, r_thigh * 0.75),
                       shade(pants, d), []))
        d = float(kn[2] + an[2]) / 2 - 0.02
        prims3.append((d, P_SHANK_L + side, _capsule_2d(kn[:2], an[:2], r_shank, r_shank * 0.68),
                       shade(pants if long_pants else skin, d), []))
        d = float(toe[2] + an[2]) / 2 - 0.021
        heel = an[:2] + (toe[:2] - an[:2]) * 0.1
        prims3.append((d, P_FOOT_L + side, _capsule_2d(heel, toe[:2], r_foot, r_foot), shade(shoes, d), []))

    prims = [_Prim(d, part, pts, col, dec) for d, part, pts, col, dec in prims3]
    prims.sort(key=lambda p: -p.depth)  # far first
    return _Person(kpts=kp[:, :2].copy(), self_vis=self_vis, prims=prims, height_px=1.0, labelled=labelled)


def _place(person: _Person, scale: float, offset: np.ndarray) -> None:
    person.kpts = person.kpts * scale + offset
    person.height_px = scale
    for p in person.prims:
        p.pts = p.pts * scale + offset
        p.decor = [(pts * scale + offset, col) for pts, col in p.decor]


def _extent(person: _Person) -> tuple[np.ndarray, np.ndarray]:
    pts = np.concatenate([p.pts for p in person.prims])
    return pts.min(0), pts.max(0)


# ----------------------------------------------------------------------------------------------------------
# drawing
# ----------------------------------------------------------------------------------------------------------

_SHIFT = 4
_ONE = 1 << _SHIFT


def _fill(img: np.ndarray, pts: np.ndarray, color, aa: bool) -> None:
    fixed = np.round(pts * _ONE).astype(np.int32)
    cv2.fillConvexPoly(img, fixed, color, cv2.LINE_AA if aa else cv2.LINE_8, _SHIFT)


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    c0, c1 = _random_color(rng), _random_color(rng)
    ang = rng.uniform(0, 2 * np.pi)
    t = (np.arange(w, dtype=np.float32)[None, :] * (math.cos(ang) / w)
         + np.arange(h, dtype=np.float32)[:, None] * (math.sin(ang) / h))
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    t = t[..., None]
    img = c0.astype(np.float32) * (1 - t) + c1.astype(np.float32) * t
    # low-frequency texture
    coarse = rng.normal(0, rng.uniform(5, 35), (max(2, h // 24), max(2, w // 24), 3)).astype(np.float32)
    img += cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(4, 16))):
        col = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = int(rng.integers(6))
        cx, cy = float(rng.uniform(-0.1, 1.1) * w), float(rng.uniform(-0.1, 1.1) * h)
        size = float(rng.uniform(0.03, 0.45) * min(w, h))
        if kind == 0:  # rotated rectangle
            box = cv2.boxPoints(((cx, cy), (size, size * rng.uniform(0.2, 2.0)), float(rng.uniform(0, 180))))
            _fill(img, box, col, True)
        elif kind == 1:  # ellipse
            pts = np.array([cx, cy]) + _CIRCLE * np.array([size / 2, size / 2 * rng.uniform(0.3, 1.0)])
            _fill(img, pts @ np.eye(2), col, True)
        elif kind == 2:  # line / pole
            p1 = (cx + rng.normal(0, size), cy + rng.normal(0, size))
            thick = int(rng.integers(1, 8))
            cv2.line(img, (int(cx), int(cy)), (int(p1[0]), int(p1[1])), col, thick, cv2.LINE_AA)
        elif kind == 3:  # random convex polygon
            pts = np.array([cx, cy]) + rng.normal(0, size / 2, (int(rng.integers(3, 8)), 2))
            _fill(img, _hull_2d(np.c_[pts, np.zeros(len(pts))]), col, True)
        elif kind == 4:  # stripes
            step = int(rng.integers(4, 16))
            x0, y0 = int(cx - size), int(cy - size)
            for k in range(0, int(2 * size), step):
                cv2.line(img, (x0 + k, y0), (x0 + k, y0 + int(2 * size)), col, max(1, step // 3))
        else:  # body-part-like distractor (limb capsule in skin or cloth colour)
            col2 = _SKIN[rng.integers(len(_SKIN))] if rng.random() < 0.5 else np.array(col, dtype=np.float64)
            p1 = np.array([cx, cy]) + rng.normal(0, size / 2, 2)
            _fill(img, _capsule_2d(np.array([cx, cy]), p1, size * 0.08, size * 0.06), _clip255(col2), True)
    return img


def _draw_occluder(rng: np.random.Generator, img: np.ndarray, label: np.ndarray, center: np.ndarray,
                   size: float) -> None:
    kind = int(rng.integers(3))
    if kind == 0:
        pts = cv2.boxPoints(((float(center[0]), float(center[1])), (size, size * rng.uniform(0.3, 1.5)),
                             float(rng.uniform(0, 180)))).astype(np.float64)
    elif kind == 1:
        pts = center + _CIRCLE * np.array([size / 2, size / 2 * rng.uniform(0.4, 1.0)])
        a = rng.uniform(0, np.pi)
        pts = center + (pts - center) @ np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    else:
        pts = center + rng.normal(0, size / 2.5, (int(rng.integers(4, 9)), 2))
        pts = _hull_2d(np.c_[pts, np.zeros(len(pts))])
    col = _random_color(rng)
    _fill(img, pts, _clip255(col), True)
    _fill(label, pts, _OCCLUDER_CODE, False)
    if rng.random() < 0.5:  # some texture: a second colour band inside
        inner = center + (pts - center) * rng.uniform(0.3, 0.7)
        _fill(img, inner, _clip255(255 - col), True)


def _draw_person(img: np.ndarray, label: np.ndarray, person: _Person, index: int) -> None:
    for prim in person.prims:
        code = 1 + _PARTS_PER_PERSON * index + prim.part
        _fill(img, prim.pts, prim.color, True)
        _fill(label, prim.pts, code, False)
        for pts, col in prim.decor:
            _fill(img, pts, col, True)
            _fill(label, pts, code, False)
        if prim.part not in (P_TORSO, P_HEAD):  # a lighter stripe along limbs gives them a rounded look
            c = prim.pts.mean(0)
            _fill(img, c + (prim.pts - c) * 0.35, _clip255(np.array(prim.color) * 1.12 + 6), True)


# ----------------------------------------------------------------------------------------------------------
# one image
# ----------------------------------------------------------------------------------------------------------


def _polygons_from_mask(mask: np.ndarray) -> list[list[float]]:
    """Polygons along the pixel edges of ``mask`` (COCO convention: pixel i spans [i, i+1)).

    Traced on the 2x upsampled mask's corner grid, so pycocotools' rasterisation of the polygons gives back
    the mask exactly (with enclosed holes filled).
    """
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    m2 = np.kron(mask[y0:y1, x0:x1].astype(np.uint8), np.ones((2, 2), np.uint8))
    g = np.zeros((m2.shape[0] + 1, m2.shape[1] + 1), np.uint8)
    g[:-1, :-1] |= m2
    g[1:, :-1] |= m2
    g[:-1, 1:] |= m2
    g[1:, 1:] |= m2
    contours, _ = cv2.findContours(g, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        c = c.reshape(-1, 2).astype(np.float64) / 2.0 + np.array([x0, y0], dtype=np.float64)
        if len(c) >= 3:  # coordinates are multiples of 0.5: exact in binary and in JSON
            polys.append(c.reshape(-1).tolist())
    polys.sort(key=len, reverse=True)  # never a 4-number first polygon (pycocotools would read it as a box)
    return polys


def _render_image(rng: np.random.Generator, w: int, h: int) -> tuple[np.ndarray, list[dict], dict]:
    """Returns (BGR image, annotations without ids, debug dict with the label map and the visible masks)."""
    img = _background(rng, w, h)
    label = np.zeros((h, w), np.uint16)

    people: list[_Person] = []
    n_tiny = int(rng.random() < 0.15) * int(rng.integers(1, 3))
    for _ in range(n_tiny):  # small, unlabelled background people (drawn first: farthest)
        p = _build_person(rng, labelled=False)
        lo, hi = _extent(p)
        s = rng.uniform(15, 35)
        tl = np.array([rng.uniform(0, w - s * (hi[0] - lo[0])), rng.uniform(0, h - s * (hi[1] - lo[1]))])
        _place(p, s, tl - s * lo)
        people.append(p)

    n = int(rng.choice([1, 2, 3, 4], p=[0.3, 0.3, 0.22, 0.18]))
    # standing height in px: mostly 56 .. 0.8 * image height (log-uniform), some close-ups cut by the border
    top = max(0.8 * h, 80.0)
    heights = np.where(rng.random(n) < 0.9, np.exp(rng.uniform(math.log(56), math.log(top), n)),
                       rng.uniform(top, 1.3 * h, n))
    heights.sort()  # smaller = farther = drawn first
    centers: list[np.ndarray] = []
    for hp in heights:
        p = _build_person(rng)
        lo, hi = _extent(p)
        bw, bh = hp * (hi - lo)
        if centers and rng.random() < 0.25:  # next to an earlier person: overlaps
            jitter = rng.normal(0, 1, 2) * np.array([0.5 * bw, 0.2 * bh])
            c = centers[int(rng.integers(len(centers)))] + jitter
            tl = c - np.array([bw, bh]) / 2
        elif rng.random() < 0.85:  # inside the image where possible
            tl = np.array([rng.uniform(min(0, w - bw), max(0, w - bw)),
                           rng.uniform(min(0, h - bh), max(0, h - bh))])
        else:  # truncated by the border
            tl = np.array([rng.uniform(-0.45 * bw, w - 0.55 * bw), rng.uniform(-0.45 * bh, h - 0.55 * bh)])
        _place(p, hp, tl - hp * lo)
        centers.append(tl + np.array([bw, bh]) / 2)
        people.append(p)

    for i, p in enumerate(people):
        _draw_person(img, label, p, i)

    n_occ = int(rng.choice([0, 1, 2, 3], p=[0.6, 0.25, 0.1, 0.05]))
    labelled_people = [p for p in people if p.labelled]
    for _ in range(n_occ):
        target = labelled_people[int(rng.integers(len(labelled_people)))]
        size = float(target.height_px * rng.uniform(0.12, 0.45))
        if rng.random() < 0.65:
            c = target.kpts[int(rng.integers(17))] + rng.normal(0, 0.08 * target.height_px, 2)
        else:
            c = np.array([rng.uniform(0, w), rng.uniform(0, h)])
        _draw_occluder(rng, img, label, c, size)

    # camera: noise, slight blur, brightness / contrast
    noise = rng.standard_normal((h, w, 3), dtype=np.float32)
    noise *= rng.uniform(1, 7)
    noise += rng.uniform(-20, 20)
    f = cv2.scaleAdd(img.astype(np.float32), rng.uniform(0.8, 1.2), noise)
    img = np.clip(f, 0, 255, out=f).astype(np.uint8)
    if rng.random() < 0.4:
        img = cv2.GaussianBlur(img, (3, 3), rng.uniform(0.3, 0.9))

    lab = label.astype(np.int32) - 1
    owner = np.where(label < _OCCLUDER_CODE, lab // _PARTS_PER_PERSON, -1)  # -1: background or occluder
    anns, masks = [], []
    for i, p in enumerate(people):
        mask = owner == i
        if mask.sum() < 30:
            continue
        polys = _polygons_from_mask(mask)
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
        kps = np.zeros((17, 3))
        area = float(mask_utils.area(rle))
        if p.labelled and area >= MIN_KEYPOINT_AREA:
            for k in range(17):
                x, y = round(float(p.kpts[k, 0]), 2), round(float(p.kpts[k, 1]), 2)  # as written to the JSON
                if not (-0.5 <= x < w - 0.5 and -0.5 <= y < h - 0.5) or p.self_vis[k] == 0:
                    continue
                ix, iy = int(math.floor(x + 0.5)), int(math.floor(y + 0.5))
                if p.self_vis[k] == 1:
                    v = 1
                elif label[iy, ix] == 0:
                    v = 2
                else:
                    v = 2 if owner[iy, ix] == i and lab[iy, ix] % _PARTS_PER_PERSON in _OWNERS[k] else 1
                kps[k] = (x, y, v)
        flat = []
        for x, y, v in kps:
            flat += [float(x), float(y), int(v)]
        anns.append({
            "segmentation": polys,
            "num_keypoints": int((kps[:, 2] > 0).sum()),
            "area": area,
            "iscrowd": 0,
            "keypoints": flat,
            "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            "category_id": 1,
        })
        masks.append(mask)
    return img, anns, {"label": label, "masks": masks, "people": people}


# ----------------------------------------------------------------------------------------------------------
# dataset files
# ----------------------------------------------------------------------------------------------------------


def _params(num_train: int, num_val: int, image_size, seed: int) -> dict:
    w, h = (int(v) for v in image_size)
    return {"generator": "hrformer.data.synthetic.coco_pose", "version": GENERATOR_VERSION,
            "num_train": int(num_train), "num_val": int(num_val), "image_size": [w, h], "seed": int(seed)}


def _image_id(split: str, index: int) -> int:
    return (VAL_ID_OFFSET if split == "val2017" else 0) + index + 1


def _file_name(image_id: int) -> str:
    return f"{image_id:012d}.jpg"


def _generated_files(root: Path, params: dict) -> list[Path]:
    files = [root / "annotations" / f"person_keypoints_{s}.json" for s in SPLITS]
    for split, n in zip(SPLITS, (params["num_train"], params["num_val"]), strict=True):
        files += [root / "images" / split / _file_name(_image_id(split, i)) for i in range(int(n))]
    return files


def _remove_outputs(root: Path, params: dict) -> None:
    """Delete the files of the generation with ``params`` and leftover temporary annotation files."""
    for f in _generated_files(root, params):
        f.unlink(missing_ok=True)
    for f in (root / "annotations").glob("person_keypoints_*.json.tmp"):
        f.unlink(missing_ok=True)


def generate_coco_pose(root: str | Path, num_train: int = 1200, num_val: int = 150,
                       image_size: tuple[int, int] = (320, 256), seed: int = 0) -> Path:
    """Write the synthetic COCO person-keypoints dataset under ``root`` and return ``root``.

    ``image_size`` is (width, height). Output is byte-identical for the same arguments. Files from an
    earlier synthetic generation in ``root`` are removed first (only those); a ``root`` that holds COCO-style
    annotations not written by this generator is refused.
    """
    root = Path(root)
    params = _params(num_train, num_val, image_size, seed)
    w, h = params["image_size"]
    if w < 64 or h < 64:
        raise ValueError(f"image_size {image_size} is too small (need >= 64x64)")
    if min(params["num_train"], params["num_val"], params["seed"]) < 0:
        raise ValueError("num_train, num_val and seed must be >= 0")
    foreign = [root / "annotations" / f"person_keypoints_{s}.json" for s in SPLITS]
    common.begin_generation(root, params, foreign=foreign, foreign_what="COCO keypoint annotations",
                            remove_outputs=_remove_outputs, required_keys=("num_train",))
    for split in SPLITS:
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)

    counts = (params["num_train"], params["num_val"])
    for split_idx, (split, n) in enumerate(zip(SPLITS, counts, strict=True)):
        images, annotations = [], []
        for i in range(n):
            rng = np.random.default_rng(np.random.SeedSequence([params["seed"], split_idx, i]))
            img, anns, _ = _render_image(rng, w, h)
            image_id = _image_id(split, i)
            name = _file_name(image_id)
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise RuntimeError(f"JPEG encoding failed for {name}")
            (root / "images" / split / name).write_bytes(buf.tobytes())
            images.append({"license": 1, "file_name": name, "coco_url": "", "height": h, "width": w,
                           "date_captured": "2017-01-01 00:00:00", "flickr_url": "", "id": image_id})
            for k, ann in enumerate(anns):
                annotations.append({**ann, "image_id": image_id, "id": image_id * 100 + k})
        common.write_json_atomic(root / "annotations" / f"person_keypoints_{split}.json", {
            "info": {"description": f"Synthetic COCO-format person keypoints, {split}, seed {params['seed']}",
                     "url": "", "version": f"{GENERATOR_VERSION}", "year": 2017, "contributor": "hrformer",
                     "date_created": "2017/01/01"},
            "licenses": [{"url": "", "id": 1, "name": "Synthetic data, no restrictions"}],
            "images": images,
            "annotations": annotations,
            "categories": [PERSON_CATEGORY],
        })
    common.finish_generation(root, params)
    return root


def ensure_synthetic_coco_pose(root: str | Path, num_train: int = 1200, num_val: int = 150,
                               image_size: tuple[int, int] = (320, 256), seed: int = 0) -> Path:
    """Generate the dataset under ``root`` unless a complete one with the same parameters is already there."""
    root = Path(root)
    params = _params(num_train, num_val, image_size, seed)
    return common.ensure_generated(root, params, lambda: generate_coco_pose(
        root, num_train=num_train, num_val=num_val, image_size=image_size, seed=seed))


def main(argv: list[str] | None = None) -> None:
    common.run_cli(argv, description=__doc__.splitlines()[0], default_root="data/coco_synthetic",
                   num_train=1200, num_val=150, image_size=(320, 256), generate=generate_coco_pose,
                   ensure=ensure_synthetic_coco_pose, what="synthetic COCO keypoints")


if __name__ == "__main__":
    main()
