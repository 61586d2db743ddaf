"""The page's 3D view: a small WebGL point viewer inside `gr.HTML`.

Why not `gr.Model3D`: it draws glTF points one pixel wide and starts far away and side-on.
This viewer draws every point as a square sized to the patch of surface it stands for (so the
cloud looks solid at any zoom), starts at the first camera's viewpoint looking at the scene,
draws camera frustums (small and faint until the pointer is over the view, so they do not hide the
scene) and the box of the selected instance with lines a few pixels wide, orbits (drag), pans
(right or shift drag), zooms (wheel), goes back to the start (double click) and selects the
instance under a click (the page's ``select`` event with the index of the point clicked).

The scene travels inside the component's value (`viewer_value`): positions as float16 around
their median, colours as uint8, sizes as uint8, all base64; about 1.3 MB for 100 000 points.
The world is the scene's (OpenCV, first camera = origin), so the start pose needs no transform.
"""
from __future__ import annotations

import base64
from dataclasses import replace

import gradio as gr
import numpy as np

from iggt.export import PointCloud, PointCloudOptions, camera_color, select_points
from iggt.geometry import invert_extrinsics
from iggt.instances import BOX_PERCENTILES
from iggt.scene import Scene

MAX_POINTS = 150_000
"""Larger clouds are thinned (fixed seed) to keep the page light."""
NO_SCENE = "Reconstruct a scene to see it in 3D."
POINT_FOOTPRINT = 1.3
"""A point is a disc this many times as wide as the spacing of its neighbours (no gaps between them)."""
MAX_SPACING = 2.0
"""A point's disc is at most this many pixels' width (at its depth) across: wider gaps are edges."""
FRUSTUM_SHARE = (0.01, 0.03)
"""Frustum depth: 30 % of the typical distance between neighbouring cameras (so frustums do not pile
up when the cameras stand close), kept within these shares of the median depth seen by camera 1."""
FRUSTUM_OPACITY = 0.25
"""Until the pointer is over the view, frustums are drawn this opaque (the scene shows through them):
the other cameras stand in front of the first one's viewpoint and would hide what they look at."""
START_PULL_BACK = 0.3
"""The start pose is the first camera moved back by this share of the median depth, so its frustum shows."""
HIGHLIGHT_COLOR = (255, 210, 0)
STRUCTURE_HIGHLIGHT = 0.5
"""A selected structure instance (greyed in instance colours) is tinted this far towards `HIGHLIGHT_COLOR`."""
MAX_BOX_SHARE = 0.4
"""The highlighted instance's box is drawn when its diagonal is at most this share of the scene's."""
VIEWER_HEIGHT = 460


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def viewer_value(scene: Scene, options: PointCloudOptions, cameras: bool = True,
                 highlight: list[int] | None = None) -> tuple[dict, np.ndarray]:
    """What the viewer draws for ``scene`` under ``options`` (points, lines and the start camera), and
    the instance id of each point drawn (BACKGROUND for none), to turn a click on a point into a selection.

    A selected instance is drawn even when it is structure and structure is hidden."""
    cloud = _shown_points(scene, options, highlight or [])
    keep = np.arange(len(cloud.points))
    if len(keep) > MAX_POINTS:
        keep = np.sort(np.random.default_rng(0).choice(len(keep), MAX_POINTS, replace=False))
    points, view, instance = cloud.points[keep].astype(np.float64), cloud.view[keep], cloud.instance[keep]
    row, col = cloud.pixel[keep].T
    size = _point_spacing(scene, options)[view, row, col] * POINT_FOOTPRINT
    size_max = float(size.max()) if len(size) else 1.0
    emphasised = np.isin(instance, highlight or [])
    colors = cloud.colors[keep]
    if scene.instances is not None and emphasised.any():
        tinted = emphasised & np.isin(instance, [i for i in highlight if scene.instances.info[i].structure])
        colors = colors.copy()
        colors[tinted] = np.round((1 - STRUCTURE_HIGHLIGHT) * colors[tinted]
                                  + STRUCTURE_HIGHLIGHT * np.array(HIGHLIGHT_COLOR))
    size_code = np.round(np.clip(size / max(size_max, 1e-12), 0, 1) * 127).astype(np.uint8)
    size_code |= emphasised.astype(np.uint8) << 7  # the top bit: drawn larger

    all_depth = scene.depth[0][np.isfinite(scene.depth[0]) & (scene.depth[0] > 0)]
    median_depth = float(np.median(all_depth)) if len(all_depth) else 1.0
    center = np.median(points, axis=0) if len(points) else np.zeros(3)
    lines = []
    if cameras:
        shortest, longest = (share * median_depth for share in FRUSTUM_SHARE)
        lines += _frustum_lines(scene, float(np.clip(0.3 * _camera_spacing(scene), shortest, longest)))
    camera_segments = len(lines)
    if len(points):
        low, high = np.percentile(points, [2, 98], axis=0)
        largest_box = MAX_BOX_SHARE * float(np.linalg.norm(high - low))
        for instance_id in highlight or []:  # the box of the points shown (depth or point map), not a stored one
            lines += _box_lines(points[instance == instance_id], HIGHLIGHT_COLOR, largest_box)
    segments = np.array([segment for segment, _ in lines], np.float32).reshape(-1, 6)
    line_colors = np.array([color for _, color in lines], np.uint8).reshape(-1, 3)
    height, width = scene.image_size
    value = {
        "count": int(len(points)),
        "total": int(len(cloud.points)),  # before thinning to MAX_POINTS
        "center": [float(v) for v in center],
        "positions": _b64((points - center).astype(np.float16)),
        "colors": _b64(colors),
        "sizes": _b64(size_code),
        "size_max": size_max,
        "lines": _b64(segments),
        "line_colors": _b64(line_colors),
        "camera_segments": camera_segments,
        "target_depth": median_depth,
        "pull_back": START_PULL_BACK * median_depth,
        "fov_y": float(2 * np.degrees(np.arctan(height / 2 / scene.intrinsics[0, 1, 1]))),
        "aspect": width / height,
    }
    return value, instance


def _shown_points(scene: Scene, options: PointCloudOptions, highlight: list[int]) -> PointCloud:
    """`select_points`, keeping the highlighted instances when structure is hidden."""
    if not (options.drop_structure and highlight and scene.instances is not None):
        return select_points(scene, options)
    cloud = select_points(scene, replace(options, drop_structure=False))
    structure = [info.id for info in scene.instances.info if info.structure and info.id not in highlight]
    keep = ~np.isin(cloud.instance, structure)
    return PointCloud(cloud.points[keep], cloud.colors[keep], cloud.instance[keep], cloud.view[keep],
                      cloud.pixel[keep])


def _point_spacing(scene: Scene, options: PointCloudOptions) -> np.ndarray:
    """``[S, H, W]``: how far each pixel's point is from its neighbours' on the same surface.

    Per image axis, the nearer of the two neighbours (the far one may be across an object's edge);
    of the two axes, the larger (a floor seen at a grazing angle has its rows far apart). At least
    the width of one pixel at the point's depth, at most `MAX_SPACING` of it.
    """
    grid = scene.points_from_depth if options.geometry == "depth" else scene.world_points
    grid = grid.astype(np.float32)

    def nearer_neighbour(axis: int) -> np.ndarray:
        step = np.linalg.norm(np.diff(grid, axis=axis), axis=-1)
        before = np.concatenate([np.take(step, [0], axis=axis), step], axis=axis)
        after = np.concatenate([step, np.take(step, [-1], axis=axis)], axis=axis)
        return np.fmin(before, after)

    camera_z = np.einsum("shwj,sj->shw", grid, scene.extrinsics[:, 2, :3]) + scene.extrinsics[:, None, None, 2, 3]
    pixel = np.abs(camera_z) / np.maximum(scene.intrinsics[:, None, None, 0, 0], 1e-6)
    spacing = np.fmax(nearer_neighbour(1), nearer_neighbour(2))
    return np.where(np.isfinite(spacing), np.clip(spacing, pixel, MAX_SPACING * pixel), pixel)


def _camera_spacing(scene: Scene) -> float:
    """Median distance from each camera to its nearest neighbour (inf for a single camera)."""
    centres = np.array([invert_extrinsics(e.astype(np.float64))[:, 3] for e in scene.extrinsics])
    if len(centres) < 2:
        return float("inf")
    distances = np.linalg.norm(centres[:, None] - centres[None], axis=-1) + np.diag(np.full(len(centres), np.inf))
    return float(np.median(distances.min(axis=1)))


def _frustum_lines(scene: Scene, depth: float) -> list[tuple[list[float], tuple[int, int, int]]]:
    """Eight segments per camera (apex to corners, image rectangle) plus a tick on its top edge."""
    height, width = scene.image_size
    lines = []
    for index in range(scene.num_views):
        fx, fy = scene.intrinsics[index, 0, 0], scene.intrinsics[index, 1, 1]
        half_w, half_h = depth * (width / 2) / fx, depth * (height / 2) / fy
        local = np.array([(0, 0, 0), (-half_w, -half_h, depth), (half_w, -half_h, depth), (half_w, half_h, depth),
                          (-half_w, half_h, depth), (0, -1.5 * half_h, depth)])
        cam_to_world = invert_extrinsics(scene.extrinsics[index].astype(np.float64))
        corners = local @ cam_to_world[:, :3].T + cam_to_world[:, 3]
        color = tuple(int(c) for c in camera_color(index, scene.num_views))  # as in the GLB and viser
        for a, b in ((0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (2, 3), (3, 4), (4, 1), (1, 5), (5, 2)):
            lines.append(([*corners[a], *corners[b]], color))
    return lines


def _box_lines(points: np.ndarray, color, largest: float) -> list[tuple[list[float], tuple[int, int, int]]]:
    """The twelve edges of the 3D box of an instance's ``points`` (2nd to 98th percentile, as its stored
    box); none when its diagonal exceeds ``largest`` (an instance scattered over the scene is shown by
    its colour alone: a box around it would cross the view)."""
    if not len(points):
        return []
    low, high = np.percentile(points, BOX_PERCENTILES, axis=0)
    if np.linalg.norm(high - low) > largest:
        return []
    corner = [np.where([i & 1, i & 2, i & 4], high, low) for i in range(8)]
    edges = [(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1]
    return [([*corner[a], *corner[b]], color) for a, b in edges]


# -- the page side --------------------------------------------------------------------------------
_TEMPLATE = """
<div class="iggt-viewer">
  <canvas></canvas>
  <div class="iggt-viewer-hint">click: select · drag: turn · right/shift drag: move · wheel: zoom · double click: back to camera 1
    · point size <input type="range" class="iggt-point-size" min="0.3" max="3" step="0.1" value="1"><span
    class="iggt-viewer-thinned"></span></div>
  <div class="iggt-viewer-empty">__NO_SCENE__</div>
</div>
"""

_CSS = f"""
.iggt-viewer {{ position: relative; width: 100%; height: {VIEWER_HEIGHT}px; background: #1e2026;
  border-radius: 6px; overflow: hidden; }}
.iggt-viewer canvas {{ width: 100%; height: 100%; display: block; touch-action: none; cursor: grab; }}
.iggt-viewer-hint {{ position: absolute; left: 8px; bottom: 6px; color: #cfd3da; font-size: 12px;
  background: rgba(0,0,0,0.45); padding: 2px 6px; border-radius: 4px; }}
.iggt-viewer-hint input {{ vertical-align: middle; width: 80px; }}
.iggt-viewer-thinned {{ display: block; color: #cfd3da; }}
.iggt-viewer-thinned:empty {{ display: none; }}
.iggt-viewer-empty {{ position: absolute; inset: 0; display: flex; align-items: center; justify-content: center;
  color: #9aa0a8; pointer-events: none; }}
"""

_SCRIPT = r"""
const NO_SCENE = "__NO_SCENE__";
const NOTHING_SHOWN = "No point passes the options below (structure hidden, a frame, the filters, the confidence): "
  + "change them to see points again.";
const POINT_VS = `#version 300 es
in vec3 a_pos; in vec3 a_color; in float a_size;
uniform mat4 u_view, u_proj; uniform vec3 u_center; uniform float u_pixels, u_size_max, u_scale;
out vec3 v_color;
void main() {
  vec4 eye = u_view * vec4(a_pos + u_center, 1.0);
  gl_Position = u_proj * eye;
  float code = a_size; float big = code >= 128.0 ? 1.0 : 0.0;
  float world = (code - 128.0 * big) / 127.0 * u_size_max;
  gl_PointSize = clamp(u_scale * world * (1.0 + big) * u_pixels / max(-eye.z, 1e-6), 1.5 + 2.0 * big, 48.0);
  v_color = a_color;
}`;
const POINT_FS = `#version 300 es
precision mediump float; in vec3 v_color; out vec4 color;
void main() { if (length(gl_PointCoord - 0.5) > 0.5) discard; color = vec4(v_color, 1.0); }`;
const LINE_FS = `#version 300 es
precision mediump float; in vec3 v_color; uniform float u_opacity; out vec4 color;
void main() { color = vec4(v_color, u_opacity); }`;
const LINE_VS = `#version 300 es
in vec3 a_pos; in vec3 a_other; in float a_side; in vec3 a_color;
uniform mat4 u_view, u_proj; uniform vec2 u_viewport; uniform float u_width;
out vec3 v_color;
void main() {
  vec4 a = u_proj * u_view * vec4(a_pos, 1.0); vec4 b = u_proj * u_view * vec4(a_other, 1.0);
  float wa = max(a.w, 1e-4), wb = max(b.w, 1e-4);
  vec2 dir = normalize((b.xy / wb - a.xy / wa) * u_viewport + 1e-6);
  vec2 normal = vec2(-dir.y, dir.x) * a_side * u_width / u_viewport;
  gl_Position = vec4(a.xy + normal * a.w, a.z, a.w);
  v_color = a_color;
}`;

let scenesDrawn = 0;
const FRUSTUM_OPACITY = __FRUSTUM_OPACITY__;
const DOUBLE_CLICK_MS = 300;
function decode(b64, Type) {
  const text = atob(b64 || ""), bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);  // 10x faster than Array.from's callback
  return new Type(bytes.buffer, 0, bytes.byteLength / Type.BYTES_PER_ELEMENT);
}
function program(gl, vs, fs) {
  const p = gl.createProgram();
  for (const [type, src] of [[gl.VERTEX_SHADER, vs], [gl.FRAGMENT_SHADER, fs]]) {
    const s = gl.createShader(type); gl.shaderSource(s, src); gl.compileShader(s);
    if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
    gl.attachShader(p, s);
  }
  gl.linkProgram(p); return p;
}
function attribute(gl, prog, name, data, size, type, normalized) {
  const loc = gl.getAttribLocation(prog, name); if (loc < 0) return;
  const buf = gl.createBuffer(); gl.canvas._resources.push(buf);
  gl.bindBuffer(gl.ARRAY_BUFFER, buf); gl.bufferData(gl.ARRAY_BUFFER, data, gl.STATIC_DRAW);
  gl.enableVertexAttribArray(loc); gl.vertexAttribPointer(loc, size, type, normalized, 0, 0);
}
function perspective(fovy, aspect, near, far) {
  const f = 1 / Math.tan(fovy / 2), nf = 1 / (near - far);
  return [f / aspect,0,0,0, 0,f,0,0, 0,0,(far + near) * nf,-1, 0,0,2 * far * near * nf,0];
}
function halfToFloat(h) {
  const sign = h & 0x8000 ? -1 : 1, exponent = (h >> 10) & 0x1f, fraction = h & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24;
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
}
function multiply(m, v) {  // column-major 4x4 matrix times (x, y, z, 1)
  return [0, 1, 2, 3].map(r => m[r] * v[0] + m[4 + r] * v[1] + m[8 + r] * v[2] + m[12 + r]);
}
function pickPoint(canvas, x, y) {
  // the index of the nearest point drawn within a few pixels of (x, y), CSS pixels from the top left; -1: none
  const scene = canvas._scene, s = canvas._state;
  if (!canvas._points) {
    const half = decode(scene.positions, Uint16Array);
    canvas._points = Float32Array.from(half, (h, i) => halfToFloat(h) + scene.center[i % 3]);
  }
  const points = canvas._points, w = canvas.clientWidth, h = canvas.clientHeight, reach = 6;
  let best = -1, bestDepth = Infinity;
  for (let i = 0; i < scene.count; i++) {
    const eye = multiply(s.view, [points[3 * i], points[3 * i + 1], points[3 * i + 2]]);
    if (eye[2] >= 0 || -eye[2] >= bestDepth) continue;
    const clip = multiply(s.proj, eye);
    const sx = (clip[0] / clip[3] * 0.5 + 0.5) * w, sy = (0.5 - clip[1] / clip[3] * 0.5) * h;
    if ((sx - x) ** 2 + (sy - y) ** 2 <= reach * reach) { best = i; bestDepth = -eye[2]; }
  }
  return best;
}
function lookAt(eye, target, up) {
  const sub = (a, b) => a.map((v, i) => v - b[i]);
  const norm = v => { const l = Math.hypot(...v) || 1; return v.map(x => x / l); };
  const cross = (a, b) => [a[1]*b[2]-a[2]*b[1], a[2]*b[0]-a[0]*b[2], a[0]*b[1]-a[1]*b[0]];
  const dot = (a, b) => a[0]*b[0] + a[1]*b[1] + a[2]*b[2];
  const z = norm(sub(eye, target)), x = norm(cross(up, z)), y = cross(z, x);
  return [x[0],y[0],z[0],0, x[1],y[1],z[1],0, x[2],y[2],z[2],0, -dot(x,eye),-dot(y,eye),-dot(z,eye),1];
}

function setup(root, scene) {
  const canvas = root.querySelector("canvas");
  const note = root.querySelector(".iggt-viewer-empty");
  if (!scene || scene.count === undefined) { note.textContent = NO_SCENE; note.style.display = "flex"; return; }
  note.textContent = NOTHING_SHOWN; note.style.display = scene.count === 0 ? "flex" : "none";
  root.querySelector(".iggt-viewer-thinned").textContent = scene.total > scene.count
    ? `${scene.count.toLocaleString("en")} of ${scene.total.toLocaleString("en")} points drawn (at most __MAX_POINTS__)`
    : "";
  const started = performance.now();
  let gl = canvas._gl;
  if (!gl) {
    gl = canvas.getContext("webgl2", {antialias: true, preserveDrawingBuffer: true});
    if (!gl) {
      note.textContent = "This browser has no WebGL 2: download the GLB instead."; note.style.display = "flex"; return;
    }
    canvas._gl = gl;
    canvas._programs = {points: program(gl, POINT_VS, POINT_FS), lines: program(gl, LINE_VS, LINE_FS)};
  }
  const progs = canvas._programs;
  for (const old of canvas._resources || [])  // the previous scene's buffers
    (old instanceof WebGLBuffer ? gl.deleteBuffer(old) : gl.deleteVertexArray(old));
  canvas._resources = [];
  // points
  const pointVao = gl.createVertexArray(); canvas._resources.push(pointVao); gl.bindVertexArray(pointVao);
  attribute(gl, progs.points, "a_pos", decode(scene.positions, Uint16Array), 3, gl.HALF_FLOAT, false);
  attribute(gl, progs.points, "a_color", decode(scene.colors, Uint8Array), 3, gl.UNSIGNED_BYTE, true);
  attribute(gl, progs.points, "a_size", new Float32Array(decode(scene.sizes, Uint8Array)), 1, gl.FLOAT, false);
  // lines: two triangles per segment, widened in screen space
  const seg = decode(scene.lines, Float32Array), segColors = decode(scene.line_colors, Uint8Array);
  const n = seg.length / 6, pos = new Float32Array(n * 18), other = new Float32Array(n * 18);
  const side = new Float32Array(n * 6), col = new Uint8Array(n * 18);
  const corners = [[0, 1], [0, -1], [1, 1], [1, 1], [0, -1], [1, -1]];
  for (let i = 0; i < n; i++) for (let k = 0; k < 6; k++) {
    const [end, s] = corners[k], me = end ? 3 : 0, them = end ? 0 : 3, v = i * 6 + k;
    for (let c = 0; c < 3; c++) {
      pos[v*3+c] = seg[i*6+me+c]; other[v*3+c] = seg[i*6+them+c]; col[v*3+c] = segColors[i*3+c];
    }
    side[v] = end ? -s : s;
  }
  const lineVao = gl.createVertexArray(); canvas._resources.push(lineVao); gl.bindVertexArray(lineVao);
  attribute(gl, progs.lines, "a_pos", pos, 3, gl.FLOAT, false);
  attribute(gl, progs.lines, "a_other", other, 3, gl.FLOAT, false);
  attribute(gl, progs.lines, "a_side", side, 1, gl.FLOAT, false);
  attribute(gl, progs.lines, "a_color", col, 3, gl.UNSIGNED_BYTE, true);
  gl.bindVertexArray(null);

  const keepPose = canvas._scene && canvas._scene.target_depth === scene.target_depth;
  const state = keepPose ? canvas._state : {};
  const reset = () => Object.assign(state, {target: [0, 0, scene.target_depth], yaw: 0, pitch: 0,
                                            distance: scene.target_depth + scene.pull_back});
  if (!keepPose) reset();
  canvas._scene = scene; canvas._state = state; canvas._points = null;
  const slider = root.querySelector(".iggt-point-size");

  function draw() {
    const rect = canvas.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(rect.width * dpr)), h = Math.max(1, Math.round(rect.height * dpr));
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    gl.viewport(0, 0, w, h); gl.clearColor(0.118, 0.125, 0.149, 1); gl.enable(gl.DEPTH_TEST);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    const cosPitch = Math.cos(state.pitch);
    const dir = [Math.sin(state.yaw) * cosPitch, -Math.sin(state.pitch), -Math.cos(state.yaw) * cosPitch];
    const eye = state.target.map((t, i) => t + dir[i] * state.distance);
    const view = lookAt(eye, state.target, [0, -1, 0]); state.view = view;
    // the vertical field of view of camera 1, widened when the canvas is narrower than its photo
    let fovy = scene.fov_y * Math.PI / 180; const aspect = w / h;
    if (aspect < scene.aspect) fovy = 2 * Math.atan(Math.tan(fovy / 2) * scene.aspect / aspect);
    const near = scene.target_depth * 0.01, far = scene.target_depth * 200;
    const proj = perspective(fovy, aspect, near, far); state.proj = proj;
    const pixels = h / (2 * Math.tan(fovy / 2));
    let p = progs.points; gl.useProgram(p);
    gl.uniformMatrix4fv(gl.getUniformLocation(p, "u_view"), false, view);
    gl.uniformMatrix4fv(gl.getUniformLocation(p, "u_proj"), false, proj);
    gl.uniform3fv(gl.getUniformLocation(p, "u_center"), scene.center);
    gl.uniform1f(gl.getUniformLocation(p, "u_pixels"), pixels);
    gl.uniform1f(gl.getUniformLocation(p, "u_size_max"), scene.size_max);
    gl.uniform1f(gl.getUniformLocation(p, "u_scale"), parseFloat(slider.value));
    gl.bindVertexArray(pointVao); gl.drawArrays(gl.POINTS, 0, scene.count);
    p = progs.lines; gl.useProgram(p);
    gl.uniformMatrix4fv(gl.getUniformLocation(p, "u_view"), false, view);
    gl.uniformMatrix4fv(gl.getUniformLocation(p, "u_proj"), false, proj);
    gl.uniform2f(gl.getUniformLocation(p, "u_viewport"), w / 2, h / 2);
    gl.uniform1f(gl.getUniformLocation(p, "u_width"), 2.0 * dpr);
    gl.bindVertexArray(lineVao);
    const cameras = scene.camera_segments || 0, opacity = gl.getUniformLocation(p, "u_opacity");
    gl.enable(gl.BLEND); gl.blendFuncSeparate(gl.SRC_ALPHA, gl.ONE_MINUS_SRC_ALPHA, gl.ZERO, gl.ONE);
    gl.uniform1f(opacity, canvas._hover ? 1.0 : FRUSTUM_OPACITY); gl.drawArrays(gl.TRIANGLES, 0, cameras * 6);
    gl.disable(gl.BLEND);
    gl.uniform1f(opacity, 1.0); gl.drawArrays(gl.TRIANGLES, cameras * 6, (n - cameras) * 6);
    gl.bindVertexArray(null);
  }
  canvas._draw = draw;
  if (!canvas._wired) {
    canvas._wired = true;
    let drag = null;
    canvas.addEventListener("contextmenu", e => e.preventDefault());
    canvas.addEventListener("pointerdown", e => {
      drag = {x: e.clientX, y: e.clientY, pan: e.button === 2 || e.shiftKey, moved: 0};
      canvas.setPointerCapture(e.pointerId);
    });
    let pending = null;  // a click selects once it is clear that it is not the first half of a double click
    canvas.addEventListener("pointerup", e => {  // a click, not a drag: select what is under the pointer
      if (drag && !drag.pan && drag.moved < 4 && e.button === 0) {
        const rect = canvas.getBoundingClientRect(), x = e.clientX - rect.left, y = e.clientY - rect.top;
        clearTimeout(pending);
        pending = setTimeout(() => {
          const index = pickPoint(canvas, x, y);
          trigger("select", {index: index, value: index});
        }, DOUBLE_CLICK_MS);
      }
      drag = null;
    });
    for (const [name, hover] of [["pointerenter", true], ["pointerleave", false]])
      canvas.addEventListener(name, () => { canvas._hover = hover; canvas._draw && canvas._draw(); });
    canvas.addEventListener("pointermove", e => {
      if (!drag) return; const s = canvas._state, dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      drag.x = e.clientX; drag.y = e.clientY; drag.moved += Math.abs(dx) + Math.abs(dy);
      if (drag.pan) {  // move the target along the screen's right and up axes (rows of the view matrix)
        const k = s.distance / canvas.clientHeight, v = s.view;
        s.target = s.target.map((t, i) => t - k * dx * v[i * 4] + k * dy * v[i * 4 + 1]);
      } else { s.yaw -= dx * 0.008; s.pitch = Math.max(-1.5, Math.min(1.5, s.pitch + dy * 0.008)); }
      canvas._draw();
    });
    canvas.addEventListener("wheel", e => {
      e.preventDefault(); canvas._state.distance *= Math.exp(e.deltaY * 0.001); canvas._draw();
    }, {passive: false});
    canvas.addEventListener("dblclick", () => { clearTimeout(pending); canvas._reset(); canvas._draw(); });
    root.querySelector(".iggt-point-size").addEventListener("input", () => canvas._draw());
    new ResizeObserver(() => canvas._draw && canvas._draw()).observe(canvas);
  }
  canvas._reset = reset;
  draw();
  canvas.dataset.points = String(scene.count);
  scenesDrawn += 1; canvas.dataset.scenes = String(scenesDrawn);  // tests wait for a new scene drawn
  canvas.dataset.renderMs = String(Math.round(performance.now() - started));
  canvas.dataset.drawnAt = String(performance.now());  // the page's clock, for benchmarks/app_latency.py
}

const root = element.querySelector(".iggt-viewer");
setup(root, props.value);
watch("value", () => setup(element.querySelector(".iggt-viewer"), props.value));
"""


def viewer_component(**kwargs) -> gr.HTML:
    """The empty viewer; handlers fill it with `viewer_value`."""
    script = (_SCRIPT.replace("__FRUSTUM_OPACITY__", str(FRUSTUM_OPACITY)).replace("__MAX_POINTS__", f"{MAX_POINTS:,}")
              .replace("__NO_SCENE__", NO_SCENE))
    return gr.HTML(None, html_template=_TEMPLATE.replace("__NO_SCENE__", NO_SCENE), css_template=_CSS,
                   js_on_load=script, **kwargs)
