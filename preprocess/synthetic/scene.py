"""Scene description of the synthetic dynamic scene: objects, parts, states, trajectories and camera.

Everything is a pure function of :class:`SyntheticConfig` (the seed drives one ``numpy.random.Generator``
consumed in a fixed order), so the same config always describes the same scene.

Coordinates:
- object-local: x right, y down, origin at the point where the object touches the table, unit = the
  object's nominal size (objects extend upwards, i.e. to negative y);
- world: pixels of the (flat) tablecloth plane at zoom 1, origin at the top-left of the cloth, which is
  ``2*width`` x ``2*height`` so the camera never sees past its edge;
- image: pixel centres of the rendered frame; world -> image is a per-frame similarity ``Scene.camera(t)``.
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

    def to_dict(self) -> dict[str, int]:
        return {k: int(v) for k, v in asdict(self).items()}


# --------------------------------------------------------------------------------------------------------
# Geometry helpers (object-local polygons, float64 (N, 2))


def ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 40, a0: float = 0.0, a1: float = 360.0,
            ) -> np.ndarray:
    """Polygon (n, 2) approximating an ellipse (or an arc from a0 to a1 degrees, closed by its chord)."""
    closed = abs((a1 - a0) - 360.0) < 1e-9
    a = np.deg2rad(np.linspace(a0, a1, n, endpoint=not closed))
    return np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], axis=1)


def poly(*pts: tuple[float, float]) -> np.ndarray:
    return np.asarray(pts, dtype=np.float64)


def smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


@dataclass
class Primitive:
    """One filled shape of an object, drawn back to front in list order.

    ``small`` / ``middle`` are the region names of this shape at those levels (the large level is always
    the object itself). ``shading`` is one of "flat", "sphere", "cylinder", "glass"; ``alpha`` < 1 blends
    with what is behind (the label still becomes this shape's). ``decals`` are (polygon, rgb) drawn on the
    RGB only, clipped to the shape.
    """

    small: str
    middle: str
    polygon: np.ndarray
    colour: tuple[float, float, float]
    shading: str = "flat"
    alpha: float = 1.0
    holes: list[np.ndarray] = field(default_factory=list)
    decals: list[tuple[np.ndarray, tuple[float, float, float]]] = field(default_factory=list)


@dataclass(frozen=True)
class ObjectKind:
    """A kind of object in the catalogue: its name, size, optional states, and its shapes.

    ``build(state_value, aux)`` returns the primitives for a continuous state value in [0, 1] (0 = first
    state) and an auxiliary per-object random array (decoration positions). ``states`` are the captions
    of the discrete states in time order; the caption switches when ``state_value`` reaches 0.5.
    """

    name: str
    size: float
    build: Callable[[float, np.ndarray], list[Primitive]]
    states: tuple[str, ...] = ()


def _green_box(openness: float, aux: np.ndarray) -> list[Primitive]:
    green, dark = (60, 160, 70), (25, 70, 30)
    front = poly((-0.5, -0.62), (0.5, -0.62), (0.5, 0.0), (-0.5, 0.0))
    side = poly((0.5, 0.0), (0.68, -0.18), (0.68, -0.8), (0.5, -0.62))
    top = poly((-0.5, -0.62), (0.5, -0.62), (0.68, -0.8), (-0.32, -0.8))
    stripe = poly((-0.5, -0.36), (0.5, -0.36), (0.5, -0.28), (-0.5, -0.28))
    prims: list[Primitive] = []
    if openness > 0.0:
        # the lid turns about the back edge of the top face: its front edge swings from the closed
        # position (offset (-0.18, +0.18) from the hinge) to upright (offset (-0.06, -0.6)).
        a = openness * math.pi / 2
        off = np.array([-0.18 * math.cos(a) - 0.06 * math.sin(a), 0.18 * math.cos(a) - 0.6 * math.sin(a)])
        h0, h1 = np.array([-0.32, -0.8]), np.array([0.68, -0.8])
        lid = np.stack([h0, h1, h1 + off, h0 + off])
        lid_first = off[1] < 0  # an upright lid is behind the opening
        lid_prim = Primitive("box lid", "box lid", lid, (80, 185, 90), "flat", decals=[])
        interior = Primitive("box interior", "box body", top, dark, "flat")
        if lid_first:
            prims += [lid_prim]
        prims += [Primitive("box side", "box body", side, (40, 120, 50), "flat"),
                  Primitive("box front", "box body", front, green, "flat",
                            decals=[(stripe, (235, 205, 60))]),
                  interior]
        if not lid_first:
            prims += [lid_prim]
        return prims
    return [Primitive("box side", "box body", side, (40, 120, 50), "flat"),
            Primitive("box front", "box body", front, green, "flat", decals=[(stripe, (235, 205, 60))]),
            Primitive("box lid", "box lid", top, (80, 185, 90), "flat")]


def _glass(fill: float, aux: np.ndarray) -> list[Primitive]:
    wall = poly((-0.3, -1.0), (0.3, -1.0), (0.24, -0.06), (-0.24, -0.06))
    base = ellipse(0.0, -0.05, 0.3, 0.06, n=24)
    prims = [Primitive("glass wall", "glass cup", wall, (200, 225, 240), "glass", alpha=0.35),
             Primitive("glass base", "glass cup", base, (170, 200, 220), "glass", alpha=0.6)]
    level = 0.9 * fill
    if level > 0.02:
        top_y = -0.08 - level
        half = 0.235 + 0.055 * level / 0.92  # the wall widens upwards
        juice = poly((-0.23, -0.08), (0.23, -0.08), (half, top_y), (-half, top_y))
        prims.append(Primitive("orange juice", "orange juice", juice, (240, 140, 20), "cylinder", alpha=0.9))
    return prims


def _red_ball(_: float, aux: np.ndarray) -> list[Primitive]:
    band = poly((-0.5, -0.58), (0.5, -0.52), (0.5, -0.44), (-0.5, -0.5))
    return [Primitive("red ball", "red ball", ellipse(0.0, -0.5, 0.5, 0.5, n=48), (215, 35, 35), "sphere",
                      decals=[(band, (245, 245, 245))])]


def _blue_mug(_: float, aux: np.ndarray) -> list[Primitive]:
    handle = ellipse(0.42, -0.45, 0.22, 0.24, n=32)
    hole = ellipse(0.42, -0.45, 0.11, 0.13, n=24)
    body = np.concatenate([poly((-0.4, -0.9), (0.4, -0.9)), ellipse(0.0, -0.08, 0.4, 0.08, n=16, a0=0, a1=180)])
    rim = ellipse(0.0, -0.9, 0.4, 0.09, n=32)
    coffee = ellipse(0.0, -0.895, 0.32, 0.06, n=24)
    logo = ellipse(-0.05, -0.48, 0.14, 0.14, n=20)
    return [Primitive("mug handle", "mug handle", handle, (40, 70, 200), "cylinder", holes=[hole]),
            Primitive("mug body", "mug body", body, (45, 80, 210), "cylinder", decals=[(logo, (240, 240, 240))]),
            Primitive("mug rim", "mug body", rim, (70, 105, 225), "flat", decals=[(coffee, (70, 40, 20))])]


def _yellow_duck(_: float, aux: np.ndarray) -> list[Primitive]:
    body = ellipse(-0.05, -0.3, 0.5, 0.3, n=40)
    wing = ellipse(-0.12, -0.32, 0.25, 0.14, n=24)
    head = ellipse(0.3, -0.75, 0.2, 0.2, n=32)
    beak = poly((0.44, -0.8), (0.72, -0.73), (0.46, -0.66))
    eye = ellipse(0.36, -0.8, 0.035, 0.035, n=10)
    return [Primitive("duck body", "duck body", body, (245, 210, 40), "sphere"),
            Primitive("duck wing", "duck body", wing, (230, 185, 20), "sphere"),
            Primitive("duck head", "duck head", head, (250, 215, 50), "sphere", decals=[(eye, (10, 10, 10))]),
            Primitive("duck beak", "duck head", beak, (240, 120, 20), "flat")]


def _pink_donut(_: float, aux: np.ndarray) -> list[Primitive]:
    dough = ellipse(0.0, -0.3, 0.5, 0.3, n=48)
    hole = ellipse(0.0, -0.3, 0.17, 0.1, n=24)
    ang = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    wave = 1.0 + 0.06 * np.sin(7 * ang + aux[0] * 6.28)
    icing = np.stack([0.43 * wave * np.cos(ang), -0.32 + 0.25 * wave * np.sin(ang)], axis=1)
    icing_hole = ellipse(0.0, -0.31, 0.22, 0.13, n=24)
    sprinkles = []
    palette = [(250, 250, 250), (60, 170, 240), (250, 230, 60), (120, 220, 120)]
    for k in range(10):
        a, r = aux[1 + 2 * k] * 2 * np.pi, 0.27 + 0.1 * aux[2 + 2 * k]
        cx, cy = r * np.cos(a), -0.32 + 0.6 * r * np.sin(a)
        sprinkles.append((ellipse(cx, cy, 0.045, 0.02, n=8), palette[k % 4]))
    return [Primitive("donut dough", "pink donut", dough, (205, 150, 90), "sphere", holes=[hole]),
            Primitive("donut icing", "pink donut", icing, (240, 120, 170), "sphere", holes=[icing_hole],
                      decals=sprinkles)]


# Inclusion order: the first two (the objects with states) are always in the scene.
CATALOGUE: tuple[ObjectKind, ...] = (
    ObjectKind("green box", 1.05, _green_box, ("closed green box", "open green box")),
    ObjectKind("glass", 0.95, _glass, ("empty glass", "full glass")),
    ObjectKind("red ball", 0.75, _red_ball),
    ObjectKind("blue mug", 0.9, _blue_mug),
    ObjectKind("yellow duck", 0.95, _yellow_duck),
    ObjectKind("pink donut", 0.95, _pink_donut),
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

    Position (world) at frame t: ``a + (b - a) * u(t) + wobble``, with ``u`` a smooth ping-pong in [0, 1].
    """

    kind: ObjectKind
    a: np.ndarray
    b: np.ndarray
    cycles: float
    phase: float
    wobble: np.ndarray
    wobble_freq: float
    change_start: float = 0.0
    change_len: float = 1.0
    aux: np.ndarray = field(default_factory=lambda: np.zeros(32))

    @property
    def name(self) -> str:
        return self.kind.name


class Scene:
    """The full, deterministic description of a synthetic scene (see the module docstring for frames).

    Attributes: ``config``, ``objects`` (list[SceneObject], in catalogue order), ``regions`` (list[Region]),
    ``nominal`` (object nominal size in world pixels), ``world_size`` (w, h) of the tablecloth plane.
    """

    def __init__(self, config: SyntheticConfig) -> None:
        config.validate()
        self.config = config
        w, h, f = config.width, config.height, config.frames
        rng = np.random.default_rng(config.seed)
        self.world_size = (2 * w, 2 * h)
        self.world_centre = np.array([w, h], dtype=np.float64)
        self.nominal = 0.36 * min(w, h)
        # camera: phases of pan / zoom / roll
        self.cam_phase = rng.uniform(0, 2 * np.pi, size=4)
        self.cloth_angle = float(rng.uniform(-0.35, 0.35))
        self.cloth_seed = int(rng.integers(0, 2**31 - 1))
        kinds = CATALOGUE[: config.objects]
        n = len(kinds)
        base_angles = rng.permutation(n) * (2 * np.pi / n) + rng.uniform(0, 2 * np.pi)
        self.objects: list[SceneObject] = []
        for i, kind in enumerate(kinds):
            ang = base_angles[i] + rng.uniform(-0.3, 0.3)
            rad = np.array([0.3 * w, 0.17 * h]) * (0.55 if kind.states else 1.0)
            off = np.array([0.0, 0.08 * h])  # bases sit a little below the centre: objects extend upwards
            a = self.world_centre + off + rad * np.array([math.cos(ang), math.sin(ang)])
            ang_b = ang + math.pi + rng.uniform(-0.7, 0.7)
            b = self.world_centre + off + rad * np.array([math.cos(ang_b), math.sin(ang_b)])
            obj = SceneObject(
                kind=kind, a=a, b=b,
                cycles=float(rng.choice([0.5, 0.75, 1.0, 1.25])) * (0.5 if kind.states else 1.0),
                phase=float(rng.uniform(0, 1)),
                wobble=rng.uniform(0.02, 0.05, size=2) * np.array([w, h]),
                wobble_freq=float(rng.uniform(1.0, 2.5)),
                aux=rng.uniform(0, 1, size=32),
            )
            if kind.states:
                obj.change_len = max(2.0, f / 10.0)
                mid = rng.uniform(0.35, 0.65) * (f - 1)
                obj.change_start = mid - obj.change_len / 2
            self.objects.append(obj)
        self.regions = self._make_regions()
        self._region_index = {(r.level, r.object, r.name): r.id for r in self.regions}

    # ---- regions ----------------------------------------------------------------------------------
    def _make_regions(self) -> list[Region]:
        regions: list[Region] = []
        for level in LEVELS:
            regions.append(Region(len(regions), TABLECLOTH, TABLECLOTH, level))
            for obj in self.objects:
                if level == "large":
                    names = [obj.name]
                else:
                    names = []
                    for value in (0.0, 0.5, 1.0):
                        for p in obj.kind.build(value, obj.aux):
                            nm = getattr(p, level)
                            if nm not in names:
                                names.append(nm)
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

    def camera(self, t: int) -> np.ndarray:
        """World -> image similarity (2, 3) at frame t: smooth pan, zoom in [1.0, 1.25] and a small roll."""
        w, h, f = self.config.width, self.config.height, self.config.frames
        s = 2 * np.pi * t / f
        p = self.cam_phase
        zoom = 1.12 + 0.12 * math.sin(0.9 * s + p[0])
        roll = math.radians(4.0) * math.sin(0.7 * s + p[1])
        centre = self.world_centre + np.array([0.08 * w * math.sin(s + p[2]), 0.05 * h * math.sin(0.8 * s + p[3])])
        rot = zoom * np.array([[math.cos(roll), -math.sin(roll)], [math.sin(roll), math.cos(roll)]])
        img_centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
        return np.concatenate([rot, (img_centre - rot @ centre)[:, None]], axis=1)

    def position(self, obj: SceneObject, t: int) -> np.ndarray:
        """World position (2,) of the object's base at frame t."""
        f = self.config.frames
        u = 0.5 - 0.5 * math.cos(2 * np.pi * (obj.cycles * t / f + obj.phase))
        s = 2 * np.pi * t / f
        wob = obj.wobble * np.array([math.sin(obj.wobble_freq * s + 6.28 * obj.aux[-1]),
                                     math.sin(1.3 * obj.wobble_freq * s + 6.28 * obj.aux[-2])])
        return obj.a + (obj.b - obj.a) * u + wob

    def facing(self, obj: SceneObject, t: int) -> float:
        """+1 or -1: objects face the way they move (mirror in x)."""
        d = self.position(obj, min(t + 1, self.config.frames - 1))[0] - self.position(obj, max(t - 1, 0))[0]
        return -1.0 if d < 0 else 1.0

    def scale(self, obj: SceneObject, t: int) -> float:
        """Size in world pixels of one object-local unit: nearer (lower) objects are bigger."""
        y = self.position(obj, t)[1]
        h = self.config.height
        persp = 1.0 + 0.9 * (y - self.world_centre[1]) / h
        return self.nominal * obj.kind.size * float(np.clip(persp, 0.6, 1.4))

    def state_value(self, obj: SceneObject, t: int) -> float:
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

    def depth(self, obj: SceneObject, t: int) -> float:
        """Painter's depth key: larger = nearer the camera (the base's world y, tie-broken by index)."""
        return float(self.position(obj, t)[1]) + 1e-6 * self.objects.index(obj)


def build_scene(config: SyntheticConfig) -> Scene:
    """Validate ``config`` and return the deterministic :class:`Scene` it describes."""
    return Scene(config)
