"""`arspine demo`: end to end on the real CT in ../shared/data.

Loads the real CT (TotalSegmentator example, with its vertebra labels), simulates an
intraoperative depth scan of the exposed lumbar spine (seeded; the truth is known), registers
without an initial pose, measures the target registration error, renders both eyes of the
head-mounted display from a surgeon's head pose, and writes the images, the registration
result and a short HTML report to ``--out``. Exit 3 when the quality gate rejects the
registration (the report is still written, and no overlay is drawn).
"""

from __future__ import annotations

import argparse
import html
import json
import math
import os
import time
from pathlib import Path

from arspine.atomic import atomic_path, atomic_write_text
from arspine.errors import InputError

__all__ = ["HELP", "add_arguments", "run", "run_demo"]

HELP = "run the end-to-end demo on the real CT in ../shared/data (register, TRE, both eyes)"

_CT = ("totalsegmentator", "example_ct.nii.gz")
_LABELS = ("totalsegmentator", "example_ct_vertebrae.nii.gz")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo-out", help="output folder (default demo-out)")
    # Seed 1's scan is registered and accepted; seeds 0 and 3 are refused by the gate (only
    # one level passes its own checks) and seed 2's pose is missed and refused: the demo
    # shows an accepted case, benchmarks/README.md the rates over the suites.
    parser.add_argument("--seed", type=int, default=1,
                        help="seed of the simulated scan (default 1; other seeds may be "
                             "refused by the quality gate, see benchmarks/README.md)")
    parser.add_argument("--display", default="default",
                        help="HMD preset: default, hololens2, magicleap2, waveguide_glasses, "
                             "quest3")
    parser.add_argument("--no-cache", action="store_true",
                        help="prepare the CT model from scratch instead of the cached one")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


class _Steps:
    """Timings per step, with a tqdm bar on a terminal."""

    def __init__(self, names: list[str], progress: bool):
        from tqdm import tqdm

        self.t = {}
        self._t0 = time.perf_counter()
        self._last = self._t0
        self.bar = tqdm(total=len(names), desc="demo", unit="step",
                        disable=not progress or not os.isatty(2))

    def done(self, name: str) -> float:
        now = time.perf_counter()
        self.t[name] = now - self._last
        self._last = now
        self.bar.set_postfix_str(name)
        self.bar.update(1)
        return self.t[name]

    @property
    def total_s(self) -> float:
        return time.perf_counter() - self._t0

    def close(self):
        self.bar.close()


def _prepared_model(ct, labels, surfaces, ct_path: Path, use_cache: bool):
    """``prepare_model`` once per CT: cached under ``cache_dir("demo")`` by file identity."""
    from arspine._version import __version__
    from arspine.registration import PreparedModel, prepare_model

    if use_cache:
        import arspine.registration.model as model_module
        from arspine.datasets.paths import cache_dir

        # the key changes with the CT file and with the registration code
        st = ct_path.stat()
        code = max(int(f.stat().st_mtime) for f in Path(model_module.__file__).parent.glob(
            "*.py"))
        key = f"{ct_path.name}-{st.st_size}-{int(st.st_mtime)}-{__version__}-{code}"
        p = cache_dir("demo") / f"model-{key}.npz"
        if p.exists():
            try:
                return PreparedModel.load(p), True
            except Exception:  # noqa: BLE001 - a stale cache is rebuilt, not fatal
                pass
    model = prepare_model(ct, labels, surfaces=surfaces)
    if use_cache:
        try:
            model.save(p)
        except Exception:  # noqa: BLE001 - caching is an optimisation only
            pass
    return model, False


def _head_pose(T_world_from_ct: dict, surfaces: dict, distance_mm: float = 400.0,
               elevation_deg: float = 70.0):
    """A surgeon at the patient's right side looking down at the exposed levels."""
    import numpy as np

    from arspine.navigation.frames import RigidTransform
    from arspine.overlay.headpose import look_at

    cents = [T_world_from_ct[lv].apply(surfaces[lv].vertices.mean(axis=0)[None])[0]
             for lv in T_world_from_ct]
    wound = np.mean(cents, axis=0)
    T_any = next(iter(T_world_from_ct.values()))
    right = T_any.apply_vectors(np.array([[-1.0, 0.0, 0.0]]))[0]  # LPS -x = patient right
    right[2] = 0.0
    if np.linalg.norm(right) < 1e-6:
        right = np.array([0.0, -1.0, 0.0])
    right /= np.linalg.norm(right)
    el = math.radians(elevation_deg)
    eye = wound + distance_mm * (math.cos(el) * right + math.sin(el) * np.array([0, 0, 1.0]))
    return RigidTransform.from_matrix(look_at(eye, wound), "world", "head",
                                      orthonormalize=True), wound


def _stereo_preview(left, right, background: int = 40):
    """Both eyes side by side, composited over a dark grey (what a wearer sees)."""
    import numpy as np

    out = []
    for img in (left, right):
        a = img[..., 3:4].astype(np.uint16)
        out.append(((img[..., :3] * a + background * (255 - a)) // 255).astype(np.uint8))
    gap = np.zeros((out[0].shape[0], 12, 3), np.uint8)
    rgb = np.concatenate([out[0], gap, out[1]], axis=1)
    alpha = np.full(rgb.shape[:2] + (1,), 255, np.uint8)
    return np.concatenate([rgb, alpha], axis=2)


def _scan_figure(path: Path, scan_ct, surfaces: dict, levels_ok: list) -> None:
    """Posterior view (x-z plane of ``ct``) of the vertebrae and the registered scan."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(5, 6), dpi=100)
    for lv, m in surfaces.items():
        v = m.vertices[:: max(1, len(m.vertices) // 3000)]
        ax.scatter(v[:, 0], v[:, 2], s=0.3, c="#c8b88a" if lv in levels_ok else "#888")
        c = m.vertices.mean(axis=0)
        ax.text(c[0] + 45, c[2], lv, fontsize=8, va="center")
    if scan_ct is not None and len(scan_ct):
        s = scan_ct[np.random.default_rng(0).choice(len(scan_ct), min(20000, len(scan_ct)),
                                                    replace=False)]
        lo, hi = np.percentile(np.vstack([m.vertices for m in surfaces.values()]), [0, 100],
                               axis=0)
        keep = np.all((s >= lo - 60) & (s <= hi + 60), axis=1)
        ax.scatter(s[keep, 0], s[keep, 2], s=0.2, c="#1e88e5", alpha=0.4)
    ax.set_aspect("equal")
    ax.invert_xaxis()  # patient's left (+x) on the right of a posterior view is flipped
    ax.set_xlabel("x (ct, mm)")
    ax.set_ylabel("z (ct, mm, superior up)")
    ax.set_title("registered scan (blue) over the CT vertebrae")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def run_demo(out: str | os.PathLike, seed: int = 1, display: str = "default",
             use_cache: bool = True, progress: bool = True, log=print) -> dict:
    """Run the demo; returns the summary written to ``out/summary.json``.

    Keys: ``status``, ``reason``, ``tre_mm`` (per level median), ``tre_median_mm``,
    ``registration_s``, ``total_s``, ``timings_s``, ``files``.
    """
    import numpy as np

    from arspine._version import __version__
    from arspine.commands.render import write_png
    from arspine.datasets.anatomy import anatomy_from_ct
    from arspine.datasets.paths import real_data_path
    from arspine.datasets.simulate import simulate_scan
    from arspine.imaging import load_ct, load_labels
    from arspine.overlay.display import get_display
    from arspine.overlay.headpose import default_T_world_from_sensor
    from arspine.overlay.renderer import OverlayRenderer
    from arspine.registration import register
    from arspine.registration.metrics import tre_mm

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out must be a folder, got the file {out}")
    out.mkdir(parents=True, exist_ok=True)
    hmd = get_display(display)
    steps = _Steps(["load", "surfaces", "simulate", "prepare", "register", "plan", "render",
                    "report"], progress)
    try:
        ct_path, labels_path = real_data_path(*_CT), real_data_path(*_LABELS)
        ct = load_ct(ct_path, progress=False)
        labels = load_labels(labels_path, like=ct)
        steps.done("load")
        log(f"CT {ct_path.name}: {ct.shape[0]}x{ct.shape[1]}x{ct.shape[2]} voxels, "
            f"{', '.join(f'{s:.1f}' for s in ct.spacing_mm)} mm, levels "
            f"{', '.join(labels.levels)}")

        anatomy = anatomy_from_ct(ct, labels)
        surfaces = anatomy.surfaces
        steps.done("surfaces")
        sim = simulate_scan(anatomy, seed=seed)
        steps.done("simulate")
        log(f"simulated scan: {len(sim.cloud)} points (sensor frame), exposed "
            f"{', '.join(sim.exposed_levels)}, seed {seed}")

        model, cached = _prepared_model(ct, labels, surfaces, ct_path, use_cache)
        steps.done("prepare")
        t0 = time.perf_counter()
        result = register(model, sim.cloud)
        reg_s = time.perf_counter() - t0
        steps.done("register")

        tre = {}
        for lv in sim.exposed_levels:
            vr = result.vertebrae.get(lv)
            if vr is None or lv not in sim.targets_ct_mm:
                continue
            tre[lv] = tre_mm(vr.T_sensor_from_ct, sim.truth[lv], sim.targets_ct_mm[lv])
        ok_levels = [lv for lv, v in result.vertebrae.items()
                     if result.status == "ok" and v.status == "ok"]

        screws = []
        plan_note = ""
        try:
            from arspine.navigation.plan import propose_screws

            levels_planned = [lv for lv in ok_levels if lv in labels.levels]
            if levels_planned:
                screws = list(propose_screws(ct, labels, levels=levels_planned))
        except Exception as exc:  # noqa: BLE001 - the plan is optional in the demo
            plan_note = f"no screw plan ({type(exc).__name__}: {exc})"
        steps.done("plan")

        T_world_from_sensor = default_T_world_from_sensor()
        if ok_levels:
            T_world_from_ct = {lv: T_world_from_sensor @ result.vertebrae[lv].T_sensor_from_ct
                               for lv in ok_levels}
            draw = {lv: surfaces[lv] for lv in ok_levels}
            text = None
        else:  # a rejected registration is never drawn: show the refusal instead
            T_world_from_ct = {lv: T_world_from_sensor @ sim.truth[lv]
                               for lv in sim.exposed_levels}
            draw = {}
            text = "REGISTRATION REJECTED - no overlay shown"
        T_world_from_head, wound = _head_pose(T_world_from_ct, surfaces)
        # transparent bone: the planned screws inside it stay visible (the point of AR)
        renderer = OverlayRenderer(hmd, draw or {k: surfaces[k] for k in list(surfaces)[:1]},
                                   screws if draw else [], style="transparent")
        try:
            frame = renderer.render(T_world_from_head, T_world_from_ct if draw else {},
                                    text=text)
        finally:
            renderer.close()
        files = {}
        for side in ("left", "right"):
            files[f"eye_{side}"] = (write_png(out / f"eye_{side}.png",
                                                       frame.images[side])).name
        files["stereo"] = (write_png(out / "eyes_stereo.png", _stereo_preview(
            frame.images["left"], frame.images["right"]))).name
        eyes = {"frames": [{"index": 0, "left": frame.eye_dict("left", files["eye_left"]),
                            "right": frame.eye_dict("right", files["eye_right"]),
                            "T_world_from_head": T_world_from_head.as_matrix().tolist()}],
                "display": hmd.to_dict(),
                "T_world_from_sensor": T_world_from_sensor.as_matrix().tolist()}
        atomic_write_text(out / "eyes.json", json.dumps(eyes, indent=1))
        files["eyes"] = "eyes.json"
        steps.done("render")

        result_d = result.to_dict()
        atomic_write_text(out / "result.json", json.dumps(result_d, indent=1))
        files["result"] = "result.json"
        truth_d = {"vertebrae": {lv: {"T_sensor_from_ct": T.as_matrix().tolist(),
                                      "targets_ct_mm": sim.targets_ct_mm[lv].tolist()}
                                 for lv, T in sim.truth.items() if lv in sim.targets_ct_mm}}
        atomic_write_text(out / "truth.json", json.dumps(truth_d))
        files["truth"] = "truth.json"
        scan_ct = result.T_sensor_from_ct.inv().apply(sim.cloud.points) \
            if result.status == "ok" else None
        _scan_figure(out / "scan_over_ct.png", scan_ct, surfaces, ok_levels)
        files["figure"] = "scan_over_ct.png"

        all_tre = np.concatenate(list(tre.values())) if tre else np.array([])
        summary = {
            "status": result.status, "reason": result.reason,
            "exposed_levels": list(sim.exposed_levels),
            "tre_mm": {lv: {"median": float(np.median(v)), "max": float(np.max(v)),
                            "n_targets": int(len(v))} for lv, v in tre.items()},
            "tre_median_mm": float(np.median(all_tre)) if all_tre.size else None,
            "tre_p95_mm": float(np.percentile(all_tre, 95)) if all_tre.size else None,
            "registration_s": reg_s, "model_cached": cached,
            "n_scan_points": int(len(sim.cloud)), "n_screws": len(screws),
            "plan_note": plan_note, "display": hmd.name, "seed": seed,
            "timings_s": dict(steps.t), "files": files, "version": __version__,
        }
        summary["timings_s"]["report"] = 0.0
        summary["total_s"] = steps.total_s
        atomic_write_text(out / "report.html", _html(summary, ct_path, result_d))
        files["report"] = "report.html"
        steps.done("report")
        summary["total_s"] = steps.total_s
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
        return summary
    finally:
        steps.close()


def _html(s: dict, ct_path: Path, result_d: dict) -> str:
    e = html.escape
    ok = s["status"] == "ok"
    verdict = ("ACCEPTED by the quality gate" if ok
               else f"REJECTED by the quality gate: {e(str(s['reason']))}")
    rows = "".join(
        f"<tr><td>{e(lv)}</td><td>{t['median']:.2f}</td><td>{t['max']:.2f}</td>"
        f"<td>{t['n_targets']}</td><td>{e(result_d['vertebrae'].get(lv, {}).get('status', '-'))}"
        f"</td></tr>" for lv, t in s["tre_mm"].items())
    timings = "".join(f"<tr><td>{e(k)}</td><td>{v:.2f}</td></tr>"
                      for k, v in s["timings_s"].items())
    tre_line = (f"median TRE {s['tre_median_mm']:.2f} mm, p95 {s['tre_p95_mm']:.2f} mm"
                if s["tre_median_mm"] is not None else "no TRE")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>arspine demo</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
.v{{padding:.6em 1em;color:#fff;font-weight:bold;background:{'#2e7d32' if ok else '#b71c1c'}}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:right}}
img{{max-width:100%}}</style></head><body>
<h1>arspine demo</h1>
<p>Real CT <code>{e(ct_path.name)}</code> (TotalSegmentator example, CC BY 4.0) with its
vertebra labels; a simulated intraoperative depth scan ({s['n_scan_points']} points, seed
{s['seed']}, exposed {e(', '.join(s['exposed_levels']))}); markerless registration with no
initial pose; the overlay rendered for each eye of the <code>{e(s['display'])}</code>
head-mounted display.</p>
<p class="v">{verdict} &mdash; {tre_line}; registration {s['registration_s']:.2f} s;
whole demo {s['total_s']:.1f} s</p>
<h2>Eye view</h2>
<p>Left and right eye (composited over grey; the PNGs <code>eye_left.png</code> and
<code>eye_right.png</code> are RGBA with alpha 0 where an optical see-through display stays
transparent).</p>
<img src="{e(s['files']['stereo'])}" alt="stereo eye view">
<h2>Target registration error per level (mm)</h2>
<table><tr><th>level</th><th>median</th><th>max</th><th>targets</th><th>gate</th></tr>
{rows}</table>
<h2>Registered scan</h2><img src="{e(s['files']['figure'])}" alt="scan over CT" width="420">
<h2>Timings (s, 2-core CPU)</h2><table>{timings}</table>
<p>{e(s['plan_note'])}</p>
<p>Files: <code>result.json</code> (registration, DESIGN.md format), <code>truth.json</code>,
<code>eyes.json</code> (K and T_eye_from_world per eye), <code>summary.json</code>.
arspine {e(s['version'])}.</p>
</body></html>
"""


def run(args: argparse.Namespace) -> int:
    s = run_demo(args.out, seed=args.seed, display=args.display, use_cache=not args.no_cache,
                 progress=not args.no_progress, log=lambda m: print(f"arspine demo: {m}"))
    tre = s["tre_mm"]
    if s["status"] != "ok":
        print("arspine demo: the registration was rejected; the TRE below is that of the "
              "refused pose, which is never drawn")
    for lv, t in tre.items():
        print(f"arspine demo: TRE {lv}: median {t['median']:.2f} mm, max {t['max']:.2f} mm")
    if s["tre_median_mm"] is not None:
        print(f"arspine demo: TRE all levels: median {s['tre_median_mm']:.2f} mm, "
              f"p95 {s['tre_p95_mm']:.2f} mm")
    print(f"arspine demo: registration {s['registration_s']:.2f} s, whole demo "
          f"{s['total_s']:.1f} s ({', '.join(f'{k} {v:.1f}' for k, v in s['timings_s'].items())})")
    verdict = "ACCEPTED" if s["status"] == "ok" else f"REJECTED ({s['reason']})"
    print(f"arspine demo: quality gate: {verdict}")
    print(f"arspine demo: wrote {Path(args.out) / 'report.html'} and the eye images")
    return 0 if s["status"] == "ok" else 3
