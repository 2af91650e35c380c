"""Scene description of the synthetic dynamic scene: a tabletop in real 3D, its objects and the moving camera.

Everything is a pure function of :class:`SyntheticConfig` (the seed drives one ``numpy.random.Generator``
consumed in a fixed order), so the same config always describes the same scene.

Coordinates (``docs/architecture.md`` §9):

- world: metres, right-handed, **z up**; the table top (the checkered tablecloth) is the plane z = 0 and the
  objects move on it around the origin;
- object-local: metres, z up, origin where the object stands on the table; an object's pose at frame t is a
  rigid motion (translation on the table, a turn about z; the red ball also rolls);
- unit space: each solid is a unit sphere / cylinder / cube seen through an affine map ``M`` (unit -> world),
  see :mod:`preprocess.synthetic.raycast`;
- camera: OpenCV (x right, y down, z forward), extrinsics ``[R | t]`` camera-from-world, pinhole intrinsics
  ``fx = fy = (H/2) / tan(fov/2)`` (``fov`` the vertical field of view) and the principal point at the image
  centre ``(W/2, H/2)``; pixel centres are at ``(col + 0.5, row + 0.5)`` (the top-left pixel's centre is
  (0.5, 0.5)), the convention of ``inference/geometry.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from model.levels import LEVELS
from utils.cli import UserError

TABLECLOTH = "checkered tablecloth"
MAX_OBJECTS = 6
#: a pixel's 3D point "moves" when it travels more than this many metres between frames t and t + 1
MOVING_EPS = 5e-4


class SyntheticConfigError(UserError, ValueError):
    """A synthetic-scene setting is out of range (the message names the flag and the allowed values)."""


@dataclass(frozen=True)
class SyntheticConfig:
    """Settings of one synthetic scene (all of them are CLI flags of ``preprocess.make_synthetic``)."""

    frames: int = 64
    width: int = 200
    height: int = 150
    objects: int = 5
    seed: int = 0
    fov: float = 45.0

    def validate(self) -> None:
        """Raise :class:`SyntheticConfigError` naming the bad flag when a value is out of range."""
        checks = [
            ("--frames", self.frames, 4, 10000),
            ("--width", self.width, 32, 4096),
            ("--height", self.height, 32, 4096),
            ("--objects", self.objects, 1, MAX_OBJECTS),
            ("--seed", self.seed, 0, 2**32 - 1),
        ]
        for flag, value, lo, hi in checks:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise SyntheticConfigError(f"{flag} must be an integer, got {value!r}")
            if not lo <= value <= hi:
                raise SyntheticConfigError(f"{flag} must be between {lo} and {hi}, got {value}")
        if isinstance(self.fov, bool) or not isinstance(self.fov, (int, float)) or not 20.0 <= self.fov <= 90.0:
            raise SyntheticConfigError(f"--fov must be a number of degrees between 20 and 90, got {self.fov!r}")

    def to_dict(self) -> dict[str, int | float]:
        return {k: (float(v) if k == "fov" else int(v)) for k, v in asdict(self).items()}


def smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


# --------------------------------------------------------------------------------------------------------
# 4x4 affine helpers (float64)


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for small matrices with element-wise numpy (no BLAS): the same bits on every CPU."""
    return (a[:, :, None] * b[None, :, :]).sum(1)


def norm(v: np.ndarray) -> float:
    """Euclidean length of a short vector, without BLAS."""
    return math.sqrt(sum(float(x) * float(x) for x in v))


def translate(x: float, y: float, z: float) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = (x, y, z)
    return m


def scale(sx: float, sy: float, sz: float) -> np.ndarray:
    return np.diag([sx, sy, sz, 1.0])


def rotate(axis: tuple[float, float, float] | np.ndarray, angle: float) -> np.ndarray:
    """Rotation by ``angle`` radians about the unit ``axis`` (right-hand rule), as a 4x4 matrix."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    m = np.eye(4)
    m[:3, :3] = np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * matmul(k, k)
    return m


def chain(*ms: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    for m in ms:
        out = matmul(out, m)
    return out


# --------------------------------------------------------------------------------------------------------
# The catalogue: objects as solids with named parts


@dataclass(frozen=True)
class Part:
    """A named region of an object: its small- and middle-level names and its base colour (RGB 0..255)."""

    small: str
    middle: str
    colour: tuple[float, float, float]


@dataclass
class Solid:
    """One solid of an object: a unit primitive (``kind``, ``inner`` for tubes) placed by ``local`` (4x4 unit ->
    object-local), labelled ``part`` (index into the kind's parts) unless its ``texture`` rule says otherwise
    (:func:`preprocess.synthetic.render.surface`); ``param`` feeds that rule (the glass's fill level)."""

    kind: str
    local: np.ndarray
    part: int
    inner: float = 0.0
    texture: str = ""
    param: float = 0.0
    shiny: float = 0.0


@dataclass(frozen=True)
class ObjectKind:
    """A kind of object: name, parts, footprint radius (m), height of its centre (m; the ball rolls about it),
    optional states (captions in time order; the caption switches when the state value reaches 0.5) and
    ``build(state_value, aux) -> [Solid]`` (always the same number of solids, in the same order)."""

    name: str
    parts: tuple[Part, ...]
    footprint: float
    build: Callable[[float, np.ndarray], list[Solid]]
    states: tuple[str, ...] = ()
    rolls: bool = False
    centre_height: float = 0.0


S = 1.2  # overall size of the toys (the shapes below are drawn at S = 1)


def _green_box(openness: float, aux: np.ndarray) -> list[Solid]:
    hx, hy, hz = 0.09 * S, 0.07 * S, 0.06 * S
    body = Solid("box", chain(translate(0, 0, hz), scale(hx, hy, hz)), 0, texture="box_body")
    # the lid turns about the top back edge (y = +hy, z = 2 hz) up to 100 degrees
    t = 0.006 * S
    hinge = np.array([0.0, hy, 2 * hz])
    lid = chain(translate(*hinge), rotate((1, 0, 0), -openness * math.radians(100)), translate(*-hinge),
                translate(0, 0, 2 * hz + t), scale(hx * 1.03, hy * 1.03, t))
    return [body, Solid("box", lid, 2)]


def _glass(fill: float, aux: np.ndarray) -> list[Solid]:
    r, base_h, h = 0.05 * S, 0.008 * S, 0.14 * S
    base = Solid("cylinder", chain(translate(0, 0, base_h / 2), scale(1.1 * r, 1.1 * r, base_h / 2)), 1,
                 shiny=0.6)
    wall = Solid("cylinder", chain(translate(0, 0, base_h + h / 2), scale(r, r, h / 2)), 0, texture="glass",
                 param=0.92 * fill, shiny=1.0)
    return [base, wall]


def _red_ball(_: float, aux: np.ndarray) -> list[Solid]:
    r = 0.06 * S
    return [Solid("sphere", chain(translate(0, 0, r), scale(r, r, r)), 0, texture="ball", shiny=1.0)]


def _blue_mug(_: float, aux: np.ndarray) -> list[Solid]:
    r, h = 0.055 * S, 0.11 * S
    body = Solid("cylinder", chain(translate(0, 0, h / 2), scale(r, r, h / 2)), 1, texture="mug", shiny=0.8)
    ro = 0.035 * S
    handle = Solid("cylinder", chain(translate(r + 0.012 * S, 0, h / 2), rotate((1, 0, 0), math.pi / 2),
                                     scale(ro, ro, 0.009 * S)), 0, inner=0.58, shiny=0.8)
    return [handle, body]


def _yellow_duck(_: float, aux: np.ndarray) -> list[Solid]:
    body = Solid("sphere", chain(translate(0, 0, 0.045 * S), scale(0.08 * S, 0.055 * S, 0.045 * S)), 0)
    wings = [Solid("sphere", chain(translate(-0.012 * S, side * 0.05 * S, 0.052 * S),
                                   rotate((0, 1, 0), -0.3), scale(0.045 * S, 0.012 * S, 0.024 * S)), 1)
             for side in (-1, 1)]
    head = Solid("sphere", chain(translate(0.055 * S, 0, 0.105 * S), scale(0.036 * S, 0.036 * S, 0.036 * S)), 2,
                 texture="duck_head")
    beak = Solid("sphere", chain(translate(0.094 * S, 0, 0.098 * S), scale(0.03 * S, 0.018 * S, 0.008 * S)), 3)
    return [body, *wings, head, beak]


def _pink_donut(_: float, aux: np.ndarray) -> list[Solid]:
    R, hh = 0.065 * S, 0.02 * S
    return [Solid("cylinder", chain(translate(0, 0, hh), scale(R, R, hh)), 0, inner=0.38, texture="donut",
                  param=float(aux[0]))]


# Inclusion order: the first two (the objects with states) are always in the scene. Part order = region order.
CATALOGUE: tuple[ObjectKind, ...] = (
    ObjectKind("green box", (Part("box side", "box body", (40, 120, 50)), Part("box front", "box body", (60, 160, 70)),
                             Part("box lid", "box lid", (80, 185, 90)), Part("box interior", "box body", (25, 70, 30))),
               0.14 * S, _green_box, ("closed green box", "open green box")),
    ObjectKind("glass", (Part("glass wall", "glass cup", (200, 225, 240)), Part("glass base", "glass cup", (170, 200, 220)),
                         Part("orange juice", "orange juice", (240, 140, 20))),
               0.06 * S, _glass, ("empty glass", "full glass")),
    ObjectKind("red ball", (Part("red ball", "red ball", (215, 35, 35)),), 0.065 * S, _red_ball, rolls=True,
               centre_height=0.06 * S),
    ObjectKind("blue mug", (Part("mug handle", "mug handle", (40, 70, 200)), Part("mug body", "mug body", (45, 80, 210)),
                            Part("mug rim", "mug body", (70, 105, 225))),
               0.11 * S, _blue_mug),
    ObjectKind("yellow duck", (Part("duck body", "duck body", (245, 210, 40)), Part("duck wing", "duck body", (230, 185, 20)),
                               Part("duck head", "duck head", (250, 215, 50)), Part("duck beak", "duck head", (240, 120, 20))),
               0.13 * S, _yellow_duck),
    ObjectKind("pink donut", (Part("donut dough", "pink donut", (205, 150, 90)),
                              Part("donut icing", "pink donut", (240, 120, 170))),
               0.07 * S, _pink_donut),
)


@dataclass(frozen=True)
class Region:
    """One labelled region: ``id`` is global over the three levels (index into ``Scene.regions``)."""

    id: int
    name: str
    object: str
    level: str


@dataclass
class SceneObject:
    """An object placed in the scene with its motion and (optional) state-change parameters.

    Position on the table at frame t: ``a + (b - a) * u(t)`` with ``u`` a smooth ping-pong in [0, 1]
    (cosine, so it starts and stops softly); heading ``yaw0 + yaw_amp * sin(...)`` (the ball does not turn: it
    rolls along its straight path without slipping).
    """

    kind: ObjectKind
    a: np.ndarray
    b: np.ndarray
    cycles: float
    phase: float
    yaw0: float
    yaw_amp: float
    yaw_freq: float
    change_start: float = 0.0
    change_len: float = 1.0
    aux: np.ndarray = field(default_factory=lambda: np.zeros(32))

    @property
    def name(self) -> str:
        return self.kind.name


def _u(obj: SceneObject, x: float) -> float:
    """Ping-pong progress in [0, 1] at normalised time ``x`` = t / frames."""
    return 0.5 - 0.5 * math.cos(2 * math.pi * (obj.cycles * x + obj.phase))


def _place_objects(rng: np.random.Generator, kinds: tuple[ObjectKind, ...]) -> list[tuple]:
    """Straight paths on the table that keep the objects' footprints apart at all times (seeded rejection
    sampling; the best of 400 tries when none is clear). Returns per kind (a, b, cycles, phase)."""
    xs = np.linspace(0.0, 1.0, 129)
    placed: list[tuple] = []
    for kind in kinds:
        best, best_gap = None, -np.inf
        for _ in range(400):
            centre = rng.uniform(-0.24, 0.24, size=2)
            ang = rng.uniform(0, 2 * np.pi)
            half = rng.uniform(0.05, 0.11)
            d = half * np.array([math.cos(ang), math.sin(ang)])
            cycles = float(rng.choice([0.5, 0.75, 1.0, 1.25])) * (0.5 if kind.states else 1.0)
            phase = float(rng.uniform(0, 1))
            cand = (centre - d, centre + d, cycles, phase)
            gap = np.inf
            probe = SceneObject(kind, cand[0], cand[1], cycles, phase, 0, 0, 0)
            path = np.array([cand[0] + (cand[1] - cand[0]) * _u(probe, x) for x in xs])
            if np.abs(path).max() > 0.32:
                continue
            for other_kind, other in placed:
                op = SceneObject(other_kind, other[0], other[1], other[2], other[3], 0, 0, 0)
                opath = np.array([other[0] + (other[1] - other[0]) * _u(op, x) for x in xs])
                gap = min(gap, float(np.linalg.norm(path - opath, axis=1).min())
                          - kind.footprint - other_kind.footprint)
            if gap > best_gap:
                best, best_gap = cand, gap
            if gap > 0.01:
                break
        placed.append((kind, best))
    return [p for _, p in placed]


class Scene:
    """The full, deterministic description of a synthetic scene (see the module docstring for frames).

    Attributes: ``config``, ``objects`` (list[SceneObject], in catalogue order), ``regions`` (list[Region]),
    ``intrinsics`` (3, 3), ``cloth_angle`` / ``cloth_phase`` (the tablecloth's pattern).
    """

    def __init__(self, config: SyntheticConfig) -> None:
        config.validate()
        self.config = config
        w, h, f = config.width, config.height, config.frames
        rng = np.random.default_rng(config.seed)
        self.cam_phase = rng.uniform(0, 2 * np.pi, size=6)
        self.cam_azimuth = float(rng.uniform(0, 2 * np.pi))
        self.cloth_angle = float(rng.uniform(-0.6, 0.6))
        self.cloth_phase = rng.uniform(0, 2 * np.pi, size=8)
        kinds = CATALOGUE[: config.objects]
        paths = _place_objects(rng, kinds)
        self.objects: list[SceneObject] = []
        for kind, (a, b, cycles, phase) in zip(kinds, paths, strict=True):
            obj = SceneObject(kind=kind, a=a, b=b, cycles=cycles, phase=phase,
                              yaw0=float(rng.uniform(0, 2 * np.pi)), yaw_amp=float(rng.uniform(0.3, 0.9)),
                              yaw_freq=float(rng.uniform(0.5, 1.5)), aux=rng.uniform(0, 1, size=32))
            if kind.states:
                obj.change_len = max(2.0, f / 10.0)
                mid = rng.uniform(0.35, 0.65) * (f - 1)
                obj.change_start = mid - obj.change_len / 2
            self.objects.append(obj)
        focal = (h / 2) / math.tan(math.radians(config.fov) / 2)
        self.intrinsics = np.array([[focal, 0.0, w / 2], [0.0, focal, h / 2], [0.0, 0.0, 1.0]])
        self.regions = self._make_regions()
        self._region_index = {(r.level, r.object, r.name): r.id for r in self.regions}

    # ---- regions ----------------------------------------------------------------------------------
    def _make_regions(self) -> list[Region]:
        regions: list[Region] = []
        for level in LEVELS:
            regions.append(Region(len(regions), TABLECLOTH, TABLECLOTH, level))
            for obj in self.objects:
                names = [obj.name] if level == "large" else list(dict.fromkeys(getattr(p, level)
                                                                               for p in obj.kind.parts))
                for nm in names:
                    regions.append(Region(len(regions), nm, obj.name, level))
        return regions

    def region_id(self, level: str, obj: str, name: str) -> int:
        """Global id of region ``name`` of object ``obj`` at ``level``."""
        return self._region_index[(level, obj, name)]

    # ---- time -------------------------------------------------------------------------------------
    @property
    def frame_keys(self) -> list[str]:
        """HyperNeRF frame keys "000001", ... (1-based, 6 digits)."""
        return [f"{i + 1:06d}" for i in range(self.config.frames)]

    @property
    def eval_frames(self) -> list[int]:
        """0-based indices of the held-out annotated frames: every 4th frame starting at the 3rd."""
        return list(range(2, self.config.frames, 4))

    def _s(self, t: float) -> float:
        return t / max(self.config.frames - 1, 1)

    def camera_centre(self, t: float) -> np.ndarray:
        """World position (3,) of the camera at frame t: an orbit of ~49 degrees with a slow dolly and rise."""
        s, p = self._s(t), self.cam_phase
        az = self.cam_azimuth + 0.85 * (s - 0.5)
        radius = 0.68 + 0.05 * math.sin(2 * math.pi * s + p[0])
        height = 0.56 + 0.04 * math.sin(2 * math.pi * 0.75 * s + p[1])
        return np.array([radius * math.cos(az), radius * math.sin(az), height])

    def extrinsics(self, t: float) -> np.ndarray:
        """OpenCV camera-from-world (3, 4) ``[R | t]`` at frame t: looking at a slowly panning point near the
        table's centre, with a roll of up to 3 degrees."""
        s, p = self._s(t), self.cam_phase
        c = self.camera_centre(t)
        target = np.array([0.03 * math.sin(2 * math.pi * s + p[2]), 0.03 * math.cos(2 * math.pi * 0.6 * s + p[3]),
                           0.04])
        z = target - c
        z /= norm(z)
        x = np.cross(z, np.array([0.0, 0.0, 1.0]))
        x /= norm(x)
        y = np.cross(z, x)
        roll = math.radians(3.0) * math.sin(2 * math.pi * 0.8 * s + p[4])
        xr = math.cos(roll) * x + math.sin(roll) * y
        yr = -math.sin(roll) * x + math.cos(roll) * y
        R = np.stack([xr, yr, z])
        return np.concatenate([R, -matmul(R, c[:, None])], axis=1)

    def pose(self, obj: SceneObject, t: float) -> np.ndarray:
        """Object-local -> world (4, 4) at frame t."""
        f = self.config.frames
        u = _u(obj, t / f)
        pos = obj.a + (obj.b - obj.a) * u
        if obj.kind.rolls:
            # rolling without slipping: the turn about the horizontal axis across the path is distance / radius
            d = obj.b - obj.a
            length = norm(d)
            axis = np.array([-d[1], d[0], 0.0]) / max(length, 1e-12)
            angle = length * u / obj.kind.centre_height
            ch = obj.kind.centre_height
            return chain(translate(pos[0], pos[1], 0.0), translate(0, 0, ch), rotate(axis, angle),
                         translate(0, 0, -ch))
        yaw = obj.yaw0 + obj.yaw_amp * math.sin(2 * math.pi * obj.yaw_freq * t / f + 6.28 * obj.aux[-1])
        return chain(translate(pos[0], pos[1], 0.0), rotate((0, 0, 1), yaw))

    def solids(self, t: float) -> list[tuple[SceneObject, Solid, np.ndarray]]:
        """Every solid at frame t as (object, solid, M unit -> world (4, 4)); the same list length every frame."""
        out = []
        for obj in self.objects:
            pose = self.pose(obj, t)
            for solid in obj.kind.build(self.state_value(obj, t), obj.aux):
                out.append((obj, solid, matmul(pose, solid.local)))
        return out

    def state_value(self, obj: SceneObject, t: float) -> float:
        """Continuous state in [0, 1] (box openness, glass fill); 0 for objects without states."""
        if not obj.kind.states:
            return 0.0
        return smoothstep((t - obj.change_start) / obj.change_len)

    def state_index(self, obj: SceneObject, t: int) -> int:
        """Index into ``obj.kind.states`` of the caption that holds at frame t."""
        return int(self.state_value(obj, t) >= 0.5)

    def state_timeline(self) -> dict[str, list[str]]:
        """Per object with states: the caption at every frame (the generator's ground truth)."""
        return {o.name: [o.kind.states[self.state_index(o, t)] for t in range(self.config.frames)]
                for o in self.objects if o.kind.states}

    def state_intervals(self) -> dict[str, dict[str, list[list[int]]]]:
        """``{object: {caption: [[l, r], ...]}}`` inclusive 0-based runs of :meth:`state_timeline`."""
        out: dict[str, dict[str, list[list[int]]]] = {}
        for name, captions in self.state_timeline().items():
            runs: dict[str, list[list[int]]] = {c: [] for c in dict.fromkeys(captions)}
            start = 0
            for t in range(1, len(captions) + 1):
                if t == len(captions) or captions[t] != captions[start]:
                    runs[captions[start]].append([start, t - 1])
                    start = t
            out[name] = runs
        return out


def build_scene(config: SyntheticConfig) -> Scene:
    """Validate ``config`` and return the deterministic :class:`Scene` it describes."""
    return Scene(config)
